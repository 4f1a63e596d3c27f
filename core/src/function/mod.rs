//! Functions: the JSON definition format (see docs/functions.md), its validation and compiled
//! form.

mod bundle;
mod cron;
mod dag;
mod dotenv;
mod load;
mod matcher;
mod model;
mod parse;
mod parse_wait;
mod problems;
#[cfg(test)]
pub(crate) mod test_support;
mod wait;

pub use bundle::{
    BundleFile, FunctionBundle, MAX_BUNDLE_BYTES, MAX_BUNDLE_FILES, decode_bundles, encode_bundles,
};
pub use cron::{CronTrigger, SCHEDULED_EVENT};
pub use dotenv::{DOTENV_FILE, parse_dotenv};
pub use load::{DEFINITION_FILES, content_version, definition_file, discover, load_function};
pub use matcher::{EVENT_FIELDS, MatchKey, event_path};
pub use model::{
    DEFAULT_ATTEMPTS, DEFAULT_STEP_TIMEOUT, Edge, Function, Join, Step, Trigger, name_matches,
};
pub use parse::{RuntimeCatalog, parse_function, resolve_path};
pub use problems::{LoadError, Problem};
pub use wait::{CancelRule, EventSpec, EventWait, Sleep, Wait, WaitKind, WaitMode, time_of};
