//! Cron triggers: a schedule in UTC, compiled once at load.

use std::str::FromStr;

use chrono::{DateTime, Utc};

/// The name of the event a cron tick emits; its data holds `cron` (the schedule) and
/// `function` (the function id).
pub const SCHEDULED_EVENT: &str = "weir/scheduled.timer";

/// A `{"cron": "…"}` trigger: 5 fields (minute hour day-of-month month day-of-week), or 6 with
/// seconds first; evaluated in UTC.
#[derive(Debug, Clone)]
pub struct CronTrigger {
    source: String,
    schedule: croner::Cron,
}

impl CronTrigger {
    /// Compiles a schedule; an [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput)
    /// error says what is wrong with it.
    pub fn parse(source: &str) -> crate::Result<CronTrigger> {
        let trimmed = source.trim();
        if trimmed.starts_with("TZ=") || trimmed.starts_with("CRON_TZ=") {
            return Err(crate::Error::invalid(
                "time zones are not supported yet: cron schedules run in UTC; remove the TZ= prefix",
            ));
        }
        let schedule = croner::Cron::from_str(trimmed)
            .map_err(|e| crate::Error::invalid(format!("invalid cron schedule {source:?}: {e}")))?;
        // A schedule that never fires (30 February) is a mistake worth reporting at load.
        let trigger = CronTrigger {
            source: trimmed.to_string(),
            schedule,
        };
        if trigger.next_after(0).is_none() {
            return Err(crate::Error::invalid(format!(
                "cron schedule {source:?} never fires"
            )));
        }
        Ok(trigger)
    }

    /// The schedule as written (trimmed).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The first tick strictly after `after_ms` (epoch milliseconds), if any.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        // Ticks fall on whole seconds: search from the second `after_ms` falls in.
        let start: DateTime<Utc> =
            DateTime::from_timestamp_millis(after_ms.div_euclid(1000) * 1000)?;
        let next = self.schedule.find_next_occurrence(&start, false).ok()?;
        Some(next.timestamp_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::CronTrigger;

    #[test]
    fn five_fields_fire_at_the_minute_in_utc() {
        let noon = CronTrigger::parse("0 12 * * *").expect("valid");
        // 2026-11-27T10:30:00Z → 2026-11-27T12:00:00Z
        let at = 1_795_861_800_000;
        assert_eq!(noon.next_after(at), Some(1_795_867_200_000));
        // Strictly after: a tick is not its own successor.
        assert_eq!(
            noon.next_after(1_795_867_200_000),
            Some(1_795_867_200_000 + 86_400_000)
        );
    }

    #[test]
    fn six_fields_have_seconds_first() {
        let every_second = CronTrigger::parse("* * * * * *").expect("valid");
        assert_eq!(every_second.next_after(1_000_500), Some(1_001_000));
    }

    #[test]
    fn bad_schedules_say_why() {
        assert!(CronTrigger::parse("61 * * * *").is_err());
        assert!(CronTrigger::parse("not a cron").is_err());
        let tz = CronTrigger::parse("TZ=Europe/Paris 0 12 * * *").expect_err("no time zones");
        assert!(tz.to_string().contains("UTC"), "{tz}");
        let never = CronTrigger::parse("0 0 30 2 *").expect_err("never fires");
        assert!(never.to_string().contains("never fires"), "{never}");
    }
}
