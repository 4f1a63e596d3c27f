//! Functions: the JSON definition format (see docs/functions.md), its validation and compiled
//! form.

mod cron;
mod dag;
mod dotenv;
mod load;
mod model;
mod parse;
mod problems;
#[cfg(test)]
pub(crate) mod test_support;

pub use cron::{CronTrigger, SCHEDULED_EVENT};
pub use dotenv::{DOTENV_FILE, parse_dotenv};
pub use load::{DEFINITION_FILES, content_version, definition_file, discover, load_function};
pub use model::{
    DEFAULT_ATTEMPTS, DEFAULT_STEP_TIMEOUT, Edge, Function, Join, Step, Trigger, name_matches,
};
pub use parse::{RuntimeCatalog, parse_function, resolve_path};
pub use problems::{LoadError, Problem};
