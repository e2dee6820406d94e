//! GCS XML-write shim for fake-gcs-server (being written).
