//! What a GCS SA storage needs around it in tests: fake-gcs behind a
//! [`GcsShim`], an [`IamDouble`] that lets the server's own identity
//! impersonate the target accounts, and that identity's key file.

use std::path::PathBuf;

use reqwest::Url;

use crate::gcs_shim::{write_service_account_key, GcsShim};
use crate::iam_double::{IamDouble, IamDoubleBuilder};
use crate::{fake_gcs, unique_prefix, GcsServer};

/// fake-gcs, its shim, the IAM double and the server's identity; keep it
/// alive as long as the storages under test are used.
#[derive(Debug)]
pub struct GcsSaRig {
    /// The emulator (its bucket exists).
    pub emulator: GcsServer,
    /// The shim in front of the emulator; use [`GcsSaRig::base_url`] as the
    /// backend's GCS base URL.
    pub shim: GcsShim,
    /// The IAM Credentials double.
    pub iam: IamDouble,
    /// The server's own service-account key file (Application Default
    /// Credentials), for the base email the double accepts.
    pub identity_key: PathBuf,
    dir: PathBuf,
}

impl IamDoubleBuilder {
    /// Starts this double with fake-gcs behind a shim, and writes the key
    /// file of the double's first base email (see
    /// [`IamDoubleBuilder::base_email`]).
    ///
    /// # Panics
    /// If the emulator is not running (saying how to start it), no base
    /// email was given, or the key file cannot be written.
    pub async fn start_with_fake_gcs(self) -> GcsSaRig {
        let emulator = fake_gcs();
        let base = self
            .base_emails
            .first()
            .cloned()
            .expect("GcsSaRig: the IAM double needs a base_email for the server's identity");
        let shim = GcsShim::start(&emulator.endpoint).await;
        let iam = self.start().await;
        let dir = std::env::temp_dir().join(unique_prefix("gcs-sa-identity"));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let identity_key = write_service_account_key(&dir, &base);
        GcsSaRig {
            emulator,
            shim,
            iam,
            identity_key,
            dir,
        }
    }
}

impl GcsSaRig {
    /// The shim's URL, for the backend's `with_base_url`.
    ///
    /// # Panics
    /// Never in practice: the shim's endpoint is a loopback URL.
    pub fn base_url(&self) -> Url {
        Url::parse(&self.shim.endpoint()).expect("the shim's URL")
    }
}

impl Drop for GcsSaRig {
    fn drop(&mut self) {
        // Best effort: a leftover throw-away key in the temp dir is harmless.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
