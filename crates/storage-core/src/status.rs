//! The sync status state machine, in one place.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// Where a storage's last sync stands.
///
/// ```text
/// initialized -> queued -> in_progress -> completed | completed_with_errors | failed
///      completed | completed_with_errors | failed -> queued        (re-sync)
///      queued -> failed                                            (never started)
///      in_progress -> queued                                       (lease expired, resumed)
/// ```
///
/// ```
/// use storage_core::SyncStatus;
/// assert!(SyncStatus::Initialized.check_move(SyncStatus::Queued).is_ok());
/// assert!(SyncStatus::Initialized.check_move(SyncStatus::Completed).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    /// Created, never synced.
    Initialized,
    /// A sync was requested and waits for a worker.
    Queued,
    /// A worker runs the sync.
    InProgress,
    /// The last sync finished without error.
    Completed,
    /// The last sync finished, but some objects or tasks were rejected.
    CompletedWithErrors,
    /// The last sync stopped on an error (see `traceback`).
    Failed,
}

impl SyncStatus {
    /// Every status, in Label Studio's order.
    pub const ALL: [SyncStatus; 6] = [
        Self::Initialized,
        Self::Queued,
        Self::InProgress,
        Self::Failed,
        Self::Completed,
        Self::CompletedWithErrors,
    ];

    /// The wire name (`in_progress`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initialized => "initialized",
            Self::Queued => "queued",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::CompletedWithErrors => "completed_with_errors",
            Self::Failed => "failed",
        }
    }

    /// True while a job owns the storage (`queued` or `in_progress`).
    pub fn is_active(self) -> bool {
        matches!(self, Self::Queued | Self::InProgress)
    }

    /// True once a sync has ended, whatever the outcome.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::CompletedWithErrors | Self::Failed
        )
    }

    /// Checks that moving from `self` to `to` is allowed.
    pub fn check_move(self, to: SyncStatus) -> Result<()> {
        use SyncStatus::*;
        let allowed = match (self, to) {
            (Initialized, Queued) => true,
            (from, Queued) if from.is_finished() => true,
            (Queued, InProgress) | (Queued, Failed) => true,
            (InProgress, Completed | CompletedWithErrors | Failed | Queued) => true,
            _ => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(Error::IllegalTransition { from: self, to })
        }
    }
}

impl fmt::Display for SyncStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SyncStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| Error::invalid("status", format!("\"{s}\" is not a valid choice.")))
    }
}

#[cfg(test)]
mod tests {
    use super::SyncStatus::{self, *};

    #[test]
    fn every_move_is_checked() {
        let allowed = [
            (Initialized, Queued),
            (Completed, Queued),
            (CompletedWithErrors, Queued),
            (Failed, Queued),
            (Queued, InProgress),
            (Queued, Failed),
            (InProgress, Completed),
            (InProgress, CompletedWithErrors),
            (InProgress, Failed),
            (InProgress, Queued),
        ];
        for from in SyncStatus::ALL {
            for to in SyncStatus::ALL {
                assert_eq!(
                    from.check_move(to).is_ok(),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn wire_names_round_trip() {
        for status in SyncStatus::ALL {
            assert_eq!(status.as_str().parse::<SyncStatus>().unwrap(), status);
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::json!(status.as_str())
            );
        }
        assert!("running".parse::<SyncStatus>().is_err());
    }
}
