//! Per-partition offset bookkeeping of one subscription: what was received, handed out and
//! acked, and which offset may be committed (the contiguous acked prefix).
//!
//! Pure data, no Kafka: the consumer thread, `next()` and the ackers share it behind a mutex.

use std::collections::{BTreeSet, HashMap};

/// The prefix of the commit metadata this driver writes: `weir:d={offset}` records the
/// highest offset of the partition handed to the application, and an optional
/// `;a={ranges}` the offsets above the committed one already acked (`7,9-12`).
const METADATA_PREFIX: &str = "weir:d=";

/// Longest commit metadata written (Kafka's default `offset.metadata.max.bytes` is 4096):
/// past it the acked offsets are left out (and delivered again after a restart).
const METADATA_MAX: usize = 3000;

/// The commit metadata recording `delivered` as the highest offset handed out and `acked`
/// (ascending) as acked above the committed offset.
pub(crate) fn metadata(delivered: Option<i64>, acked: &[i64]) -> String {
    let mut text = format!("{METADATA_PREFIX}{}", delivered.unwrap_or(-1));
    if acked.is_empty() {
        return text;
    }
    let base = text.len();
    text.push_str(";a=");
    let mut i = 0;
    while i < acked.len() {
        let start = acked[i];
        let mut end = start;
        while i + 1 < acked.len() && acked[i + 1] == end + 1 {
            i += 1;
            end = acked[i];
        }
        if !text.ends_with('=') {
            text.push(',');
        }
        if start == end {
            text.push_str(&start.to_string());
        } else {
            text.push_str(&format!("{start}-{end}"));
        }
        if text.len() > METADATA_MAX {
            text.truncate(base);
            return text;
        }
        i += 1;
    }
    text
}

/// What commit metadata says: the highest offset handed out (`-1`: none or not ours) and the
/// offsets acked above the committed one.
pub(crate) fn parse_metadata(metadata: &str) -> (i64, BTreeSet<i64>) {
    let Some(rest) = metadata.strip_prefix(METADATA_PREFIX) else {
        return (-1, BTreeSet::new());
    };
    let (mark, acked) = rest.split_once(";a=").unwrap_or((rest, ""));
    let Ok(mark) = mark.parse() else {
        return (-1, BTreeSet::new());
    };
    let mut set = BTreeSet::new();
    for range in acked.split(',').filter(|r| !r.is_empty()) {
        let (start, end) = range.split_once('-').unwrap_or((range, range));
        let (Ok(start), Ok(end)) = (start.parse::<i64>(), end.parse::<i64>()) else {
            return (mark, BTreeSet::new());
        };
        if end < start || end - start > 100_000 {
            return (mark, BTreeSet::new());
        }
        set.extend(start..=end);
    }
    (mark, set)
}

/// One assigned partition.
#[derive(Debug)]
struct Part {
    /// Changes on every assignment: messages and acks of an older one are stale.
    epoch: u64,
    /// Being revoked: nothing more of it is handed out.
    revoking: bool,
    /// Received and not acked (including those not handed out yet).
    outstanding: BTreeSet<i64>,
    /// Handed out and not acked or nacked yet (a subset of `outstanding`).
    handed: BTreeSet<i64>,
    /// The highest offset received.
    highest_received: Option<i64>,
    /// The highest offset handed out.
    highest_handed: Option<i64>,
    /// Acked offsets above the lowest outstanding one (recorded in the commit metadata).
    acked: BTreeSet<i64>,
    /// Offsets the previous owner acked above its commit: skipped.
    skip: BTreeSet<i64>,
    /// Offsets up to this one were handed out by the partition's previous owner (from the
    /// commit metadata it left): delivering them again counts a redelivery.
    redelivered_through: i64,
    /// The last commit sent: (offset, highest handed out, acked offsets above it).
    committed: Option<(i64, Option<i64>, usize)>,
}

/// A commit to send: `offset` of `partition`, with the highest offset handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommitPoint {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) handed: Option<i64>,
    pub(crate) acked: Vec<i64>,
}

/// What to do with a message received from Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// Hand it out: its assignment's epoch, and whether the partition's previous owner had
    /// handed it out already.
    Deliver(u64, bool),
    /// Skip it (another group's, or acked by the partition's previous owner).
    Skip,
}

/// The bookkeeping of every partition a subscription holds.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    parts: HashMap<i32, Part>,
    next_epoch: u64,
}

impl Tracker {
    /// `partition` was assigned; `redelivered_through` and `skip` from the committed metadata.
    /// Returns the epoch of the new assignment (any older state of the partition is
    /// forgotten).
    pub(crate) fn assign(
        &mut self,
        partition: i32,
        redelivered_through: i64,
        skip: BTreeSet<i64>,
    ) -> u64 {
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        self.parts.insert(
            partition,
            Part {
                epoch,
                revoking: false,
                outstanding: BTreeSet::new(),
                handed: BTreeSet::new(),
                highest_received: None,
                highest_handed: None,
                acked: BTreeSet::new(),
                skip,
                redelivered_through,
                committed: None,
            },
        );
        epoch
    }

    /// A message at `offset` was received from Kafka. `ours`: it is for this group (else it
    /// counts as acked at once: another group's republished message).
    pub(crate) fn received(&mut self, partition: i32, offset: i64, ours: bool) -> Received {
        if !self.parts.contains_key(&partition) {
            // Assigned without our callback seeing it (should not happen): track it anyway.
            self.assign(partition, -1, BTreeSet::new());
        }
        let Some(part) = self.parts.get_mut(&partition) else {
            return Received::Skip;
        };
        part.highest_received = Some(part.highest_received.map_or(offset, |h| h.max(offset)));
        if !ours || part.skip.remove(&offset) {
            return Received::Skip;
        }
        part.outstanding.insert(offset);
        Received::Deliver(part.epoch, offset <= part.redelivered_through)
    }

    /// `next()` is about to hand out `offset`; false when its partition was revoked or
    /// reassigned since (the message is skipped: the partition's owner delivers it).
    pub(crate) fn hand_out(&mut self, partition: i32, epoch: u64, offset: i64) -> bool {
        match self.parts.get_mut(&partition) {
            Some(part) if part.epoch == epoch && !part.revoking => {
                part.handed.insert(offset);
                part.highest_handed = Some(part.highest_handed.map_or(offset, |h| h.max(offset)));
                true
            }
            _ => false,
        }
    }

    /// The handler acked `offset` (or it was republished); false when stale.
    pub(crate) fn ack(&mut self, partition: i32, epoch: u64, offset: i64) -> bool {
        match self.parts.get_mut(&partition) {
            Some(part) if part.epoch == epoch => {
                part.handed.remove(&offset);
                if !part.outstanding.remove(&offset) {
                    return false;
                }
                part.acked.insert(offset);
                match part.outstanding.first() {
                    Some(&floor) => part.acked = part.acked.split_off(&floor),
                    None => part.acked.clear(),
                }
                true
            }
            _ => false,
        }
    }

    /// The handler gave `offset` up without it being acked (a failed nack): it stays
    /// uncommitted, so the partition's next owner gets it again.
    pub(crate) fn release(&mut self, partition: i32, epoch: u64, offset: i64) {
        if let Some(part) = self.parts.get_mut(&partition)
            && part.epoch == epoch
        {
            part.handed.remove(&offset);
        }
    }

    /// The commit a partition needs, if it changed since the last one sent: the lowest
    /// outstanding offset, or one past the highest received when nothing is outstanding.
    fn point(partition: i32, part: &Part) -> Option<CommitPoint> {
        let offset = match part.outstanding.first() {
            Some(&lowest) => lowest,
            None => part.highest_received? + 1,
        };
        let now = (offset, part.highest_handed, part.acked.len());
        (part.committed != Some(now)).then(|| CommitPoint {
            partition,
            offset,
            handed: part.highest_handed,
            acked: part.acked.iter().copied().collect(),
        })
    }

    /// The commits needed by `partitions` (every partition when `None`).
    pub(crate) fn commit_points(&self, partitions: Option<&[i32]>) -> Vec<CommitPoint> {
        let mut points: Vec<CommitPoint> = self
            .parts
            .iter()
            .filter(|(p, _)| partitions.is_none_or(|only| only.contains(p)))
            .filter_map(|(&p, part)| Self::point(p, part))
            .collect();
        points.sort_by_key(|c| c.partition);
        points
    }

    /// Records that `points` were sent.
    pub(crate) fn committed(&mut self, points: &[CommitPoint]) {
        for c in points {
            if let Some(part) = self.parts.get_mut(&c.partition) {
                part.committed = Some((c.offset, c.handed, c.acked.len()));
            }
        }
    }

    /// Forgets that `partitions` were committed (a commit failed: send it again).
    pub(crate) fn uncommitted(&mut self, partitions: &[i32]) {
        for p in partitions {
            if let Some(part) = self.parts.get_mut(p) {
                part.committed = None;
            }
        }
    }

    /// Starts revoking `partitions` (nothing more of them is handed out); returns how many
    /// of their messages the handler holds.
    pub(crate) fn begin_revoke(&mut self, partitions: &[i32]) -> usize {
        for p in partitions {
            if let Some(part) = self.parts.get_mut(p) {
                part.revoking = true;
            }
        }
        self.held(partitions)
    }

    /// Messages of `partitions` the handler holds (handed out, not acked).
    pub(crate) fn held(&self, partitions: &[i32]) -> usize {
        partitions
            .iter()
            .filter_map(|p| self.parts.get(p))
            .map(|part| part.handed.len())
            .sum()
    }

    /// Forgets `partitions` (revoked).
    pub(crate) fn remove(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.parts.remove(p);
        }
    }

    /// Every partition held.
    pub(crate) fn partitions(&self) -> Vec<i32> {
        let mut all: Vec<i32> = self.parts.keys().copied().collect();
        all.sort_unstable();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t: &Tracker, p: i32) -> Option<(i64, Option<i64>)> {
        t.commit_points(Some(&[p]))
            .first()
            .map(|c| (c.offset, c.handed))
    }

    fn acked(t: &Tracker, p: i32) -> Vec<i64> {
        t.commit_points(Some(&[p]))
            .first()
            .map(|c| c.acked.clone())
            .unwrap_or_default()
    }

    #[test]
    fn commits_the_contiguous_acked_prefix() {
        let mut t = Tracker::default();
        let e = t.assign(0, -1, BTreeSet::new());
        assert_eq!(point(&t, 0), None, "nothing received: nothing to commit");
        for o in 10..15 {
            assert_eq!(t.received(0, o, true), Received::Deliver(e, false));
            assert!(t.hand_out(0, e, o));
        }
        assert_eq!(point(&t, 0), Some((10, Some(14))));
        // Out of order: 12 and 11 acked, 10 not: still 10.
        assert!(t.ack(0, e, 12));
        assert!(t.ack(0, e, 11));
        assert_eq!(point(&t, 0), Some((10, Some(14))));
        assert_eq!(acked(&t, 0), [11, 12], "acked above the prefix");
        assert!(t.ack(0, e, 10));
        assert_eq!(point(&t, 0), Some((13, Some(14))));
        assert_eq!(acked(&t, 0), Vec::<i64>::new());
        let points = t.commit_points(None);
        t.committed(&points);
        assert_eq!(point(&t, 0), None, "unchanged since the last commit");
        assert!(t.ack(0, e, 14));
        assert!(t.ack(0, e, 13));
        assert_eq!(point(&t, 0), Some((15, Some(14))));
        assert!(!t.ack(0, e, 13), "a second ack changes nothing");
    }

    #[test]
    fn skipped_messages_do_not_hold_the_commit_back() {
        let mut t = Tracker::default();
        let e = t.assign(3, -1, BTreeSet::new());
        t.received(3, 0, true);
        t.received(3, 1, false); // another group's republished message
        t.received(3, 2, true);
        assert!(t.hand_out(3, e, 0));
        assert!(t.ack(3, e, 0));
        assert_eq!(point(&t, 3), Some((2, Some(0))));
        assert!(t.hand_out(3, e, 2));
        assert!(t.ack(3, e, 2));
        assert_eq!(point(&t, 3), Some((3, Some(2))));
    }

    #[test]
    fn stale_epochs_and_revocation() {
        let mut t = Tracker::default();
        let old = t.assign(1, -1, BTreeSet::new());
        t.received(1, 5, true);
        t.received(1, 6, true);
        assert!(t.hand_out(1, old, 5));
        assert_eq!(t.begin_revoke(&[1]), 1, "one message held");
        assert!(!t.hand_out(1, old, 6), "nothing handed out while revoking");
        assert!(t.ack(1, old, 5), "acks still count while revoking");
        assert_eq!(t.held(&[1]), 0);
        assert_eq!(point(&t, 1), Some((6, Some(5))));
        t.remove(&[1]);
        let new = t.assign(1, 5, BTreeSet::from([7]));
        assert_ne!(old, new);
        assert!(!t.ack(1, old, 6), "an ack of the old assignment is stale");
        assert_eq!(
            t.received(1, 5, true),
            Received::Deliver(new, true),
            "handed out before"
        );
        assert_eq!(t.received(1, 6, true), Received::Deliver(new, false));
        assert_eq!(t.received(1, 7, true), Received::Skip, "acked before");
        assert!(!t.hand_out(1, old, 6));
        assert!(t.hand_out(1, new, 6));
        t.release(1, new, 6);
        assert_eq!(t.held(&[1]), 0);
        assert_eq!(point(&t, 1), Some((5, Some(6))));
        assert_eq!(acked(&t, 1), Vec::<i64>::new());
        assert_eq!(t.partitions(), [1]);
    }

    #[test]
    fn metadata_round_trips() {
        let none = BTreeSet::new();
        assert_eq!(metadata(Some(41), &[]), "weir:d=41");
        assert_eq!(parse_metadata(&metadata(Some(41), &[])), (41, none.clone()));
        assert_eq!(parse_metadata(&metadata(None, &[])), (-1, none.clone()));
        assert_eq!(
            metadata(Some(20), &[3, 4, 5, 7, 9, 10]),
            "weir:d=20;a=3-5,7,9-10"
        );
        assert_eq!(
            parse_metadata("weir:d=20;a=3-5,7,9-10"),
            (20, BTreeSet::from([3, 4, 5, 7, 9, 10]))
        );
        assert_eq!(parse_metadata(""), (-1, none.clone()));
        assert_eq!(parse_metadata("someone else's"), (-1, none.clone()));
        assert_eq!(parse_metadata("weir:d=5;a=x"), (5, none.clone()));
        // Too many ranges: the list is left out, the mark stays.
        let scattered: Vec<i64> = (0..2000).map(|i| i * 2).collect();
        let text = metadata(Some(9999), &scattered);
        assert_eq!(text, "weir:d=9999");
    }
}
