//! Telling this weir process's containers from others', and removing orphans: containers whose
//! owner process died mid-step (same host), or that outlived their deadline (any owner).

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use weir_core::Result;

use crate::client::{docker_error, status_of};
use crate::labels;

/// How long past its deadline a container may live before any weir removes it (clock skew
/// between hosts sharing an engine, and the owner's own clean-up).
pub(crate) const DEADLINE_GRACE: Duration = Duration::from_secs(60);

/// This process's `weir.owner` label: `<hostname>/<pid>/<start time in clock ticks>`.
pub(crate) fn this_process() -> &'static str {
    static OWNER: OnceLock<String> = OnceLock::new();
    OWNER.get_or_init(|| {
        let pid = std::process::id();
        format!("{}/{pid}/{}", hostname(), start_time(pid).unwrap_or(0))
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// The start time of a live (not zombie) process, from `/proc/<pid>/stat`.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces and parentheses): state is field 3,
    // starttime field 22.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Whether the owner named by a `weir.owner` label is known to be gone: it ran on this host and
/// its process (same pid *and* start time) no longer exists. `false` when it cannot be told.
fn owner_is_gone(owner: &str) -> bool {
    let mut parts = owner.rsplitn(3, '/');
    let (Some(start), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(start), Ok(pid)) = (start.parse::<u64>(), pid.parse::<u32>()) else {
        return false;
    };
    if host != hostname() || !std::path::Path::new("/proc/self/stat").exists() {
        return false;
    }
    start_time(pid) != Some(start)
}

/// Why a container labelled `labels` is an orphan, or `None` when it is not (or may not be).
pub(crate) fn orphan_reason(labels: &HashMap<String, String>, now: SystemTime) -> Option<String> {
    let owner = labels.get(labels::OWNER)?;
    if owner == this_process() {
        return None;
    }
    let now_s = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if let Some(deadline) = labels
        .get(labels::DEADLINE)
        .and_then(|d| d.parse::<u64>().ok())
        && now_s > deadline.saturating_add(DEADLINE_GRACE.as_secs())
    {
        return Some(format!("past its deadline ({}s ago)", now_s - deadline));
    }
    owner_is_gone(owner).then(|| format!("its weir process ({owner}) is gone"))
}

/// Removes (killing if needed) every weir container that is an orphan; returns their ids.
pub(crate) async fn sweep(docker: &Docker) -> Result<Vec<String>> {
    let filters = HashMap::from([("label", vec![labels::OWNER])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let containers = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| docker_error("listing weir's containers", e))?;
    let now = SystemTime::now();
    let mut removed = Vec::new();
    for container in containers {
        let (Some(id), Some(labels)) = (container.id, container.labels) else {
            continue;
        };
        let Some(reason) = orphan_reason(&labels, now) else {
            continue;
        };
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match docker.remove_container(&id, Some(options)).await {
            Ok(()) => {
                tracing::info!(container = %id, step = ?labels.get(labels::STEP_ID),
                    run = ?labels.get(labels::RUN_ID), %reason, "removed an orphaned step container");
                removed.push(id);
            }
            // Its owner (or another sweep) removed it meanwhile.
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) if status_of(&e) == Some(409) => {}
            Err(e) => return Err(docker_error("removing an orphaned step container", e)),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, String)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn this_process_is_alive_and_never_an_orphan() {
        let me = this_process();
        assert!(me.starts_with(&hostname()));
        assert!(!owner_is_gone(me));
        let now = SystemTime::now();
        let mine = labels(&[
            (labels::OWNER, me.to_string()),
            (labels::DEADLINE, "0".into()),
        ]);
        assert_eq!(orphan_reason(&mine, now), None);
    }

    #[test]
    fn dead_owners_on_this_host_and_late_containers_are_orphans() {
        let now = SystemTime::now();
        let now_s = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let future = (now_s + 600).to_string();
        // pid 1 exists, but not with that start time: a reused pid is not the owner.
        let dead = format!("{}/1/999999999999", hostname());
        let l = labels(&[(labels::OWNER, dead), (labels::DEADLINE, future.clone())]);
        assert!(orphan_reason(&l, now).unwrap().contains("is gone"));
        // Another host: cannot tell, so only its deadline counts.
        let other = labels(&[
            (labels::OWNER, "elsewhere/1/1".into()),
            (labels::DEADLINE, future),
        ]);
        assert_eq!(orphan_reason(&other, now), None);
        let late = (now_s - DEADLINE_GRACE.as_secs() - 5).to_string();
        let l = labels(&[
            (labels::OWNER, "elsewhere/1/1".into()),
            (labels::DEADLINE, late),
        ]);
        assert!(
            orphan_reason(&l, now)
                .unwrap()
                .contains("past its deadline")
        );
        assert_eq!(orphan_reason(&HashMap::new(), now), None);
    }
}
