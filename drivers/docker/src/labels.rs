//! Labels weir puts on the containers (and images) it creates; `docker ps --filter label=…`.

/// The run an attempt's container belongs to.
pub const RUN_ID: &str = "weir.run_id";
/// The step an attempt's container (or a built image) belongs to.
pub const STEP_ID: &str = "weir.step_id";
/// The function an attempt's container (or a built image) belongs to.
pub const FUNCTION_ID: &str = "weir.function_id";
/// The attempt number.
pub const ATTEMPT: &str = "weir.attempt";
/// The weir process that owns the container: `<hostname>/<pid>/<process start time>`.
pub const OWNER: &str = "weir.owner";
/// When the attempt times out, in Unix seconds: past it (plus a grace period) the container is
/// an orphan whoever owns it.
pub const DEADLINE: &str = "weir.deadline";
