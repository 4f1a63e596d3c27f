//! Per-partition offset bookkeeping of one subscription: what was received, handed out and
//! acked, and which offset may be committed (the contiguous acked prefix).
//!
//! Pure data, no Kafka: the consumer thread, `next()` and the ackers share it behind a mutex.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The prefix of the commit metadata this driver writes: `weir:d={offset}` records the
/// highest offset of the partition handed to the application, and an optional
/// `;a={ranges}` the offsets above the committed one that need not be delivered again
/// (`7,9-12`: acked, or skipped as another group's).
const METADATA_PREFIX: &str = "weir:d=";

/// Longest commit metadata written (Kafka's default `offset.metadata.max.bytes` is 4096):
/// ranges past it are left out (and their messages delivered again after a restart).
const METADATA_MAX: usize = 3000;

/// Disjoint, non-adjacent inclusive ranges of offsets (`start → end`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Ranges(BTreeMap<i64, i64>);

impl Ranges {
    /// Adds `start..=end` (merging with overlapping and adjacent ranges).
    pub(crate) fn insert(&mut self, start: i64, end: i64) {
        if end < start {
            return;
        }
        let (mut start, mut end) = (start, end);
        let touching: Vec<(i64, i64)> = self
            .0
            .range(..=end.saturating_add(1))
            .rev()
            .take_while(|&(_, &e)| e >= start.saturating_sub(1))
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.0.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.0.insert(start, end);
    }

    /// Removes `offset`; whether it was there.
    pub(crate) fn remove(&mut self, offset: i64) -> bool {
        let Some((&start, &end)) = self.0.range(..=offset).next_back() else {
            return false;
        };
        if end < offset {
            return false;
        }
        self.0.remove(&start);
        if start < offset {
            self.0.insert(start, offset - 1);
        }
        if offset < end {
            self.0.insert(offset + 1, end);
        }
        true
    }

    /// The ranges, ascending.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.0.iter().map(|(&s, &e)| (s, e))
    }

    /// Whether `offset` is in a range.
    #[cfg(test)]
    pub(crate) fn contains(&self, offset: i64) -> bool {
        self.0
            .range(..=offset)
            .next_back()
            .is_some_and(|(_, &end)| end >= offset)
    }
}

impl FromIterator<(i64, i64)> for Ranges {
    fn from_iter<I: IntoIterator<Item = (i64, i64)>>(iter: I) -> Self {
        let mut ranges = Ranges::default();
        for (start, end) in iter {
            ranges.insert(start, end);
        }
        ranges
    }
}

/// The commit metadata recording `delivered` as the highest offset handed out (`-1`: none)
/// and `done` (ascending, disjoint) as not to be delivered again above the committed
/// offset. Ranges that would take it past [`METADATA_MAX`] are left out (the lowest ones
/// are kept).
pub(crate) fn metadata(delivered: i64, done: impl IntoIterator<Item = (i64, i64)>) -> String {
    let mut text = format!("{METADATA_PREFIX}{delivered}");
    let mut first = true;
    for (start, end) in done {
        let item = if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        };
        let separator = if first { ";a=" } else { "," };
        if text.len() + separator.len() + item.len() > METADATA_MAX {
            break;
        }
        text.push_str(separator);
        text.push_str(&item);
        first = false;
    }
    text
}

/// What commit metadata says: the highest offset handed out (`-1`: none or not ours) and the
/// offsets above the committed one not to deliver again.
pub(crate) fn parse_metadata(metadata: &str) -> (i64, Ranges) {
    let Some(rest) = metadata.strip_prefix(METADATA_PREFIX) else {
        return (-1, Ranges::default());
    };
    let (mark, done) = rest.split_once(";a=").unwrap_or((rest, ""));
    let Ok(mark) = mark.parse() else {
        return (-1, Ranges::default());
    };
    let mut ranges = Ranges::default();
    for range in done.split(',').filter(|r| !r.is_empty()) {
        let (start, end) = range.split_once('-').unwrap_or((range, range));
        let (Ok(start), Ok(end)) = (start.parse::<i64>(), end.parse::<i64>()) else {
            return (mark, Ranges::default());
        };
        if end < start || start < 0 {
            return (mark, Ranges::default());
        }
        ranges.insert(start, end);
    }
    (mark, ranges)
}

/// One assigned partition.
#[derive(Debug)]
struct Part {
    /// Changes on every assignment: messages and acks of an older one are stale.
    epoch: u64,
    /// Being revoked: nothing more of it is handed out (or republished).
    revoking: bool,
    /// Received and not acked (including those not handed out yet). Every other offset
    /// from the first received to `highest_received` needs no delivery again (acked, or
    /// skipped): the commit metadata lists the gaps of this set, so nothing else is stored.
    outstanding: BTreeSet<i64>,
    /// Held by the handler, or by a republish sending its copy (a subset of `outstanding`):
    /// a revocation waits for these.
    handed: BTreeSet<i64>,
    /// The highest offset received.
    highest_received: Option<i64>,
    /// The highest offset handed out.
    highest_handed: Option<i64>,
    /// Offsets the previous owner left as done above its commit and not received yet:
    /// skipped, and committed again until reached (so a later owner skips them too).
    skip: Ranges,
    /// Offsets up to this one were handed out by the partition's previous owner (from the
    /// commit metadata it left): delivering them again counts a redelivery, and commits keep
    /// the mark.
    redelivered_through: i64,
    /// The last commit sent: (offset, metadata).
    committed: Option<(i64, String)>,
}

/// A commit to send: `offset` of `partition` with its `metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommitPoint {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) metadata: String,
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
    pub(crate) fn assign(&mut self, partition: i32, redelivered_through: i64, skip: Ranges) -> u64 {
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
            self.assign(partition, -1, Ranges::default());
        }
        let Some(part) = self.parts.get_mut(&partition) else {
            return Received::Skip;
        };
        part.highest_received = Some(part.highest_received.map_or(offset, |h| h.max(offset)));
        if !ours || part.skip.remove(offset) {
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
                part.outstanding.remove(&offset)
            }
            _ => false,
        }
    }

    /// `offset` is no longer held (by the handler or a republish) but stays uncommitted:
    /// the partition's next owner gets it again unless a republish claims it back.
    pub(crate) fn release(&mut self, partition: i32, epoch: u64, offset: i64) {
        if let Some(part) = self.parts.get_mut(&partition)
            && part.epoch == epoch
        {
            part.handed.remove(&offset);
        }
    }

    /// Whether a republish of `offset` may still happen: its assignment is current, not
    /// being revoked, and the offset not acked.
    pub(crate) fn current(&self, partition: i32, epoch: u64, offset: i64) -> bool {
        self.parts.get(&partition).is_some_and(|part| {
            part.epoch == epoch && !part.revoking && part.outstanding.contains(&offset)
        })
    }

    /// A republish is about to send its copy of `offset`: true (and the offset held, so a
    /// revocation waits for the send) when its assignment is current and the offset not
    /// acked, and either it is still held (the handler's own nack, which a revocation in
    /// progress waits for) or the partition is not being revoked. False: stale, the
    /// partition's owner delivers the original again (no copy must be made).
    pub(crate) fn claim(&mut self, partition: i32, epoch: u64, offset: i64) -> bool {
        match self.parts.get_mut(&partition) {
            Some(part)
                if part.epoch == epoch
                    && part.outstanding.contains(&offset)
                    && (!part.revoking || part.handed.contains(&offset)) =>
            {
                part.handed.insert(offset);
                true
            }
            _ => false,
        }
    }

    /// The commit a partition needs (if it changed since the last one sent, unless `force`):
    /// the lowest outstanding offset, or one past the highest received when nothing is
    /// outstanding; the metadata keeps the highest offset handed out (by this owner or,
    /// as inherited, a previous one) and lists what is done above the offset: the gaps
    /// between outstanding offsets up to the highest received, and the inherited skips not
    /// reached yet.
    fn point(partition: i32, part: &Part, force: bool) -> Option<CommitPoint> {
        let highest = part.highest_received?;
        let offset = part.outstanding.first().copied().unwrap_or(highest + 1);
        let mut done = Ranges::default();
        let mut next = offset;
        let mut budget = METADATA_MAX / 2;
        for &o in part.outstanding.iter().skip(1) {
            if o > next + 1 {
                done.insert(next + 1, o - 1);
                budget = budget.saturating_sub(1);
                if budget == 0 {
                    break;
                }
            }
            next = o;
        }
        if budget > 0 {
            if !part.outstanding.is_empty() && highest > next {
                done.insert(next + 1, highest);
            }
            for (start, end) in part.skip.iter().take(budget) {
                if end >= offset {
                    done.insert(start.max(offset), end);
                }
            }
        }
        let delivered = part
            .highest_handed
            .unwrap_or(-1)
            .max(part.redelivered_through);
        let text = metadata(delivered, done.iter());
        if !force
            && part
                .committed
                .as_ref()
                .is_some_and(|(o, m)| *o == offset && *m == text)
        {
            return None;
        }
        Some(CommitPoint {
            partition,
            offset,
            metadata: text,
        })
    }

    /// The commits needed by `partitions` (every partition when `None`): those that changed
    /// since the last commit sent, or every one with `force` (a final commit must not rely
    /// on an earlier one that may yet fail).
    pub(crate) fn commit_points(
        &self,
        partitions: Option<&[i32]>,
        force: bool,
    ) -> Vec<CommitPoint> {
        let mut points: Vec<CommitPoint> = self
            .parts
            .iter()
            .filter(|(p, _)| partitions.is_none_or(|only| only.contains(p)))
            .filter_map(|(&p, part)| Self::point(p, part, force))
            .collect();
        points.sort_by_key(|c| c.partition);
        points
    }

    /// Records that `points` were sent.
    pub(crate) fn committed(&mut self, points: &[CommitPoint]) {
        for c in points {
            if let Some(part) = self.parts.get_mut(&c.partition) {
                part.committed = Some((c.offset, c.metadata.clone()));
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

    /// Starts revoking `partitions` (nothing more of them is handed out or republished);
    /// returns how many of their messages are held.
    pub(crate) fn begin_revoke(&mut self, partitions: &[i32]) -> usize {
        for p in partitions {
            if let Some(part) = self.parts.get_mut(p) {
                part.revoking = true;
            }
        }
        self.held(partitions)
    }

    /// Messages of `partitions` held (handed out and not acked, or being republished).
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

    fn none() -> Ranges {
        Ranges::default()
    }

    /// The commit `t` needs for `p` (changed ones only): (offset, metadata).
    fn point(t: &Tracker, p: i32) -> Option<(i64, String)> {
        t.commit_points(Some(&[p]), false)
            .first()
            .map(|c| (c.offset, c.metadata.clone()))
    }

    fn at(offset: i64, metadata: &str) -> Option<(i64, String)> {
        Some((offset, metadata.to_owned()))
    }

    fn commit(t: &mut Tracker) {
        let points = t.commit_points(None, false);
        t.committed(&points);
    }

    #[test]
    fn commits_the_contiguous_acked_prefix() {
        let mut t = Tracker::default();
        let e = t.assign(0, -1, none());
        assert_eq!(point(&t, 0), None, "nothing received: nothing to commit");
        for o in 10..15 {
            assert_eq!(t.received(0, o, true), Received::Deliver(e, false));
            assert!(t.hand_out(0, e, o));
        }
        assert_eq!(point(&t, 0), at(10, "weir:d=14"));
        // Out of order: 12 and 11 acked, 10 not: still 10.
        assert!(t.ack(0, e, 12));
        assert!(t.ack(0, e, 11));
        assert_eq!(point(&t, 0), at(10, "weir:d=14;a=11-12"), "acked above");
        assert!(t.ack(0, e, 10));
        assert_eq!(point(&t, 0), at(13, "weir:d=14"));
        commit(&mut t);
        assert_eq!(point(&t, 0), None, "unchanged since the last commit");
        assert!(t.ack(0, e, 14));
        assert!(t.ack(0, e, 13));
        assert_eq!(point(&t, 0), at(15, "weir:d=14"));
        assert!(!t.ack(0, e, 13), "a second ack changes nothing");
    }

    #[test]
    fn skipped_messages_do_not_hold_the_commit_back() {
        let mut t = Tracker::default();
        let e = t.assign(3, -1, none());
        t.received(3, 0, true);
        t.received(3, 1, false); // another group's republished message
        t.received(3, 2, true);
        assert_eq!(point(&t, 3), at(0, "weir:d=-1;a=1"), "1 is done already");
        assert!(t.hand_out(3, e, 0));
        assert!(t.ack(3, e, 0));
        assert_eq!(point(&t, 3), at(2, "weir:d=0"));
        assert!(t.hand_out(3, e, 2));
        assert!(t.ack(3, e, 2));
        assert_eq!(point(&t, 3), at(3, "weir:d=2"));
    }

    #[test]
    fn stale_epochs_and_revocation() {
        let mut t = Tracker::default();
        let old = t.assign(1, -1, none());
        t.received(1, 5, true);
        t.received(1, 6, true);
        assert!(t.hand_out(1, old, 5));
        assert_eq!(t.begin_revoke(&[1]), 1, "one message held");
        assert!(!t.hand_out(1, old, 6), "nothing handed out while revoking");
        assert!(t.ack(1, old, 5), "acks still count while revoking");
        assert_eq!(t.held(&[1]), 0);
        assert_eq!(point(&t, 1), at(6, "weir:d=5"));
        t.remove(&[1]);
        let new = t.assign(1, 5, Ranges::from_iter([(7, 7)]));
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
        assert_eq!(point(&t, 1), at(5, "weir:d=6;a=7"));
        assert_eq!(t.partitions(), [1]);
    }

    /// A republish claims its offset only while its assignment is current: a nacking
    /// handler's own offset even during a revocation (the revocation waits for it), a
    /// released one (delayed nack, retry) not once the revocation started.
    #[test]
    fn republishes_claim_only_current_offsets() {
        let mut t = Tracker::default();
        let e = t.assign(0, -1, none());
        for o in 0..3 {
            t.received(0, o, true);
            assert!(t.hand_out(0, e, o));
        }
        t.release(0, e, 1); // a delayed nack waiting
        assert!(t.current(0, e, 1));
        assert_eq!(
            t.begin_revoke(&[0]),
            2,
            "the released offset is not waited for"
        );
        assert!(!t.current(0, e, 1));
        assert!(
            !t.claim(0, e, 1),
            "released, and the partition is being revoked"
        );
        assert!(t.claim(0, e, 0), "still held by its handler: may finish");
        assert!(t.ack(0, e, 0));
        assert!(!t.claim(0, e, 0), "acked already");
        t.remove(&[0]);
        let again = t.assign(0, 2, none());
        t.received(0, 2, true);
        assert!(!t.claim(0, e, 2), "an older assignment");
        assert!(!t.current(0, e, 2));
        assert!(t.current(0, again, 2));
    }

    /// One message held back while many after it are acked: nothing grows but the
    /// outstanding set; the metadata lists the acked run as one range.
    #[test]
    fn a_held_message_keeps_the_bookkeeping_small() {
        let mut t = Tracker::default();
        let e = t.assign(0, -1, none());
        for o in 0..100_000 {
            t.received(0, o, true);
            assert!(t.hand_out(0, e, o));
            if o != 7 {
                assert!(t.ack(0, e, o));
            }
        }
        assert_eq!(point(&t, 0), at(7, "weir:d=99999;a=8-99999"));
        let p = t.parts.get(&0).expect("part");
        assert_eq!((p.outstanding.len(), p.handed.len()), (1, 1));
        commit(&mut t);
        assert_eq!(point(&t, 0), None, "nothing new: no commit");
        // Scattered acks: the metadata stays under its limit, listing the lowest ranges.
        let e = t.assign(1, -1, none());
        for o in 0..20_000 {
            t.received(1, o, true);
            if o % 2 == 0 {
                assert!(t.hand_out(1, e, o));
            }
        }
        for o in (0..20_000).filter(|o| o % 4 == 0) {
            assert!(t.ack(1, e, o));
        }
        let (offset, text) = point(&t, 1).expect("a point");
        assert_eq!(offset, 1);
        assert!(text.len() <= METADATA_MAX, "{}", text.len());
        assert!(text.starts_with("weir:d=19998;a=4,8,12,"), "{text}");
    }

    /// The next owner commits what its predecessor left (done offsets not reached yet and
    /// the handed-out mark): the owner after it does not redeliver them either.
    #[test]
    fn inherited_metadata_is_committed_on() {
        let (mark, skip) = parse_metadata("weir:d=60;a=51-60");
        let mut t = Tracker::default();
        let e = t.assign(0, mark, skip);
        assert_eq!(t.received(0, 50, true), Received::Deliver(e, true));
        assert!(t.hand_out(0, e, 50));
        assert_eq!(point(&t, 0), at(50, "weir:d=60;a=51-60"));
        assert!(t.ack(0, e, 50));
        assert_eq!(point(&t, 0), at(51, "weir:d=60;a=51-60"));
        assert_eq!(t.received(0, 51, true), Received::Skip);
        assert_eq!(point(&t, 0), at(52, "weir:d=60;a=52-60"));
        for o in 52..=60 {
            assert_eq!(t.received(0, o, true), Received::Skip);
        }
        assert_eq!(t.received(0, 61, true), Received::Deliver(e, false));
        assert_eq!(point(&t, 0), at(61, "weir:d=60"));
        assert!(t.hand_out(0, e, 61));
        assert_eq!(point(&t, 0), at(61, "weir:d=61"));
    }

    /// A final commit is sent even when the last one sent had the same point (that one may
    /// yet fail).
    #[test]
    fn forced_commits_ignore_change_detection() {
        let mut t = Tracker::default();
        let e = t.assign(0, -1, none());
        t.received(0, 0, true);
        assert!(t.hand_out(0, e, 0));
        assert!(t.ack(0, e, 0));
        commit(&mut t);
        assert!(t.commit_points(None, false).is_empty());
        let forced = t.commit_points(Some(&[0]), true);
        assert_eq!(forced.len(), 1);
        assert_eq!(
            (forced[0].offset, forced[0].metadata.as_str()),
            (1, "weir:d=0")
        );
        t.assign(1, -1, none());
        assert_eq!(
            t.commit_points(None, true).len(),
            1,
            "nothing received on 1: nothing to commit even when forced"
        );
    }

    #[test]
    fn ranges_merge_and_split() {
        let mut r = Ranges::from_iter([(5, 7), (1, 2), (9, 9), (3, 4)]);
        assert_eq!(r.iter().collect::<Vec<_>>(), [(1, 7), (9, 9)]);
        assert!(r.remove(4));
        assert!(!r.remove(4));
        assert!(!r.remove(8));
        assert_eq!(r.iter().collect::<Vec<_>>(), [(1, 3), (5, 7), (9, 9)]);
        assert!(r.remove(1) && r.remove(9) && r.remove(7));
        assert_eq!(r.iter().collect::<Vec<_>>(), [(2, 3), (5, 6)]);
        r.insert(4, 4);
        assert_eq!(r.iter().collect::<Vec<_>>(), [(2, 6)]);
        assert!(r.contains(2) && r.contains(6) && !r.contains(7));
    }

    #[test]
    fn metadata_round_trips() {
        assert_eq!(metadata(41, []), "weir:d=41");
        assert_eq!(parse_metadata(&metadata(41, [])), (41, none()));
        assert_eq!(parse_metadata(&metadata(-1, [])), (-1, none()));
        let ranges = Ranges::from_iter([(3, 5), (7, 7), (9, 10)]);
        assert_eq!(metadata(20, ranges.iter()), "weir:d=20;a=3-5,7,9-10");
        assert_eq!(parse_metadata("weir:d=20;a=3-5,7,9-10"), (20, ranges));
        assert_eq!(parse_metadata(""), (-1, none()));
        assert_eq!(parse_metadata("someone else's"), (-1, none()));
        assert_eq!(parse_metadata("weir:d=5;a=x"), (5, none()));
        assert_eq!(parse_metadata("weir:d=5;a=9-3"), (5, none()));
        // Long runs cost nothing.
        let (_, big) = parse_metadata("weir:d=5;a=10-5000000000");
        assert!(big.contains(4_999_999_999) && !big.contains(9));
        // Too many ranges: the lowest that fit are kept, the mark stays.
        let scattered: Vec<(i64, i64)> = (0..2000).map(|i| (i * 2, i * 2)).collect();
        let text = metadata(9999, scattered.iter().copied());
        assert!(text.len() <= METADATA_MAX, "{}", text.len());
        assert!(text.starts_with("weir:d=9999;a=0,2,4,"), "{text}");
        let (mark, kept) = parse_metadata(&text);
        assert_eq!(mark, 9999);
        assert!(kept.contains(0) && !kept.contains(3998));
    }
}
