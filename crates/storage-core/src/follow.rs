//! Syncs that follow the bucket: which linked objects a listing no longer
//! holds, and the guard that keeps a suspicious listing from deleting.
//!
//! The comparison streams. Each listing batch covers the keys from the
//! previous batch's highest key up to its own; the links in that range
//! (read a page at a time, in key order) that the batch did not list are
//! candidates. A key listed later, out of order, is taken back. So the
//! result is exact for any listing order, and what is held in memory is
//! the candidates only when the listing is sorted (every bucket service
//! and local folders are); an unsorted one (Redis `SCAN`) holds the links
//! not listed yet.
//!
//! Nothing is removed until the listing has ended without error, and then
//! only within the guard: more than `deletion_guard` percent of the linked
//! objects gone, or a listing that returned nothing where objects are
//! linked, removes nothing until a sync with `confirm_deletions`.

use std::collections::{BTreeSet, HashSet};

use crate::fields::{ImportOptions, ObjectChanged, ObjectDeleted};
use crate::persist::{GoneTasks, Removed, TaskSink};
use crate::{ImportStorage, Result};

/// Linked keys read per query of the comparison.
const LINK_PAGE: usize = 5_000;

/// How a sync treats changed and deleted objects (the storage's
/// `on_object_changed`, `on_object_deleted` and `deletion_guard`, and the
/// sync request's `confirm_deletions`). The default is Label Studio's:
/// objects once synced are never looked at again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowPolicy {
    /// Changed objects.
    pub changed: ObjectChanged,
    /// Deleted objects.
    pub deleted: ObjectDeleted,
    /// The largest share (percent) of linked objects one sync may remove.
    pub guard_percent: u8,
    /// Apply removals above the guard (a sync requested with
    /// `confirm_deletions`).
    pub confirm_deletions: bool,
}

impl Default for FollowPolicy {
    fn default() -> Self {
        Self {
            changed: ObjectChanged::Keep,
            deleted: ObjectDeleted::Keep,
            guard_percent: crate::fields::DEFAULT_DELETION_GUARD as u8,
            confirm_deletions: false,
        }
    }
}

impl FollowPolicy {
    /// The policy of a storage's settings, confirmed or not.
    pub fn of(options: &ImportOptions, confirm_deletions: bool) -> Self {
        Self {
            changed: options.on_object_changed,
            deleted: options.on_object_deleted,
            guard_percent: options.deletion_guard,
            confirm_deletions,
        }
    }

    /// What happens to tasks of objects (or rows) that are gone; `None`
    /// when they stay.
    pub fn gone_tasks(&self) -> Option<GoneTasks> {
        match self.deleted {
            ObjectDeleted::Keep => None,
            ObjectDeleted::Mark => Some(GoneTasks::Mark),
            ObjectDeleted::Delete => Some(GoneTasks::Delete),
        }
    }
}

/// The comparison of a storage's linked objects with a listing, fed batch
/// by batch (see the module's documentation).
#[derive(Debug, Default)]
pub(crate) struct GoneSweep {
    /// The highest key compared so far.
    upto: Option<String>,
    /// Linked keys in the compared range the listing did not hold.
    gone: BTreeSet<String>,
    /// Linked keys in the compared range this storage's listing covers.
    linked: u64,
}

/// The linked objects a whole listing did not hold.
#[derive(Debug)]
pub(crate) struct GoneObjects {
    /// Their keys, in order.
    pub(crate) keys: Vec<String>,
    /// The linked objects the listing covers, gone or not.
    pub(crate) linked: u64,
}

impl GoneSweep {
    /// Compares one listing batch.
    pub(crate) async fn observe(
        &mut self,
        sink: &dyn TaskSink,
        source: &dyn ImportStorage,
        storage_id: i64,
        listed: &[&str],
    ) -> Result<()> {
        for key in listed {
            self.gone.remove(*key);
        }
        let Some(top) = listed.iter().copied().max() else {
            return Ok(());
        };
        if self.upto.as_deref().is_some_and(|upto| top <= upto) {
            return Ok(());
        }
        let listed: HashSet<&str> = listed.iter().copied().collect();
        self.compare_range(sink, source, storage_id, Some(top), &listed)
            .await?;
        self.upto = Some(top.to_string());
        Ok(())
    }

    /// Compares the keys above the last batch's and returns what is gone.
    /// Call only once the listing has ended without error.
    pub(crate) async fn finish(
        mut self,
        sink: &dyn TaskSink,
        source: &dyn ImportStorage,
        storage_id: i64,
    ) -> Result<GoneObjects> {
        self.compare_range(sink, source, storage_id, None, &HashSet::new())
            .await?;
        Ok(GoneObjects {
            keys: self.gone.into_iter().collect(),
            linked: self.linked,
        })
    }

    /// Reads the linked keys above `self.upto` up to `upto` a page at a
    /// time; those covered and not `listed` are gone.
    async fn compare_range(
        &mut self,
        sink: &dyn TaskSink,
        source: &dyn ImportStorage,
        storage_id: i64,
        upto: Option<&str>,
        listed: &HashSet<&str>,
    ) -> Result<()> {
        let mut after = self.upto.clone();
        loop {
            let page = sink
                .linked_keys_between(storage_id, after.as_deref(), upto, LINK_PAGE)
                .await?;
            for key in &page {
                if source.covers(key) {
                    self.linked += 1;
                    if !listed.contains(key.as_str()) {
                        self.gone.insert(key.clone());
                    }
                }
            }
            if page.len() < LINK_PAGE {
                return Ok(());
            }
            after = page.last().cloned();
        }
    }
}

impl GoneObjects {
    /// Why removing these objects' tasks waits for a confirmation, if it
    /// does: more than `guard_percent` of the linked objects gone, or none
    /// listed where objects are linked.
    pub(crate) fn held_back(&self, listed: u64, guard_percent: u8) -> Option<String> {
        let gone = self.keys.len() as u64;
        if gone == 0 {
            return None;
        }
        let percent = gone as f64 * 100.0 / self.linked.max(1) as f64;
        let reason = if listed == 0 {
            format!(
                "the listing returned no object while {} objects are linked",
                self.linked
            )
        } else if gone * 100 > u64::from(guard_percent) * self.linked {
            format!(
                "{gone} of {} linked objects ({percent:.1}%) are no longer listed, more than \
                 the storage's deletion_guard of {guard_percent}%",
                self.linked
            )
        } else {
            return None;
        };
        Some(format!(
            "Deletion guard: {reason}; no task was deleted or marked. Check the storage's \
             prefix, filter and credentials; if the objects were deleted, sync again with \
             {{\"confirm_deletions\": true}}."
        ))
    }

    /// Removes the tasks of the gone objects as `gone` says, a batch of
    /// keys per transaction.
    pub(crate) async fn remove(
        &self,
        sink: &dyn TaskSink,
        storage_id: i64,
        gone: GoneTasks,
        batch_size: usize,
    ) -> Result<Removed> {
        let mut removed = Removed::default();
        for keys in self.keys.chunks(batch_size.max(1)) {
            removed = removed.plus(sink.remove_objects(storage_id, keys, gone).await?);
        }
        Ok(removed)
    }
}
