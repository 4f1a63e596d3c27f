//! The step's process group: killed as a whole, on timeout, cancellation or exit.

/// Kills the process group with SIGKILL when [`ProcessGroup::kill`] is called or on drop.
pub(crate) struct ProcessGroup {
    pgid: Option<i32>,
}

impl ProcessGroup {
    /// The group led by `pid` (a child spawned with `process_group(0)`).
    pub(crate) fn new(pid: Option<u32>) -> Self {
        // Never 0 or 1: kill(-0) would signal our own group, kill(-1) every process.
        let pgid = pid.and_then(|p| i32::try_from(p).ok()).filter(|p| *p > 1);
        ProcessGroup { pgid }
    }

    /// Sends SIGKILL to every process left in the group (once).
    pub(crate) fn kill(&mut self) {
        let Some(pgid) = self.pgid.take() else { return };
        #[allow(unsafe_code)]
        // SAFETY: kill(2) only takes integers and touches none of our memory. `-pgid` addresses
        // the group the step was spawned into; `pgid > 1` is checked in `new`.
        let rc = unsafe { libc::kill(-pgid, libc::SIGKILL) };
        if rc != 0 {
            // ESRCH: every process of the group is gone already.
            tracing::trace!(pgid, error = %std::io::Error::last_os_error(), "kill process group");
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}
