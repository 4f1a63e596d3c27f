//! Functions for unit tests: parsed from JSON without a driver catalog.

use std::path::Path;

use serde_json::{Map, Value};

use super::{Function, RuntimeCatalog, parse_function};

/// A catalog that takes every runtime.
pub(crate) struct AnyRuntime;

impl RuntimeCatalog for AnyRuntime {
    fn check(&self, _: &str, _: &Map<String, Value>, _: Option<&Path>) -> crate::Result<()> {
        Ok(())
    }
}

/// The function `doc` defines, at `version`; panics when it is invalid.
pub(crate) fn function_from(doc: &Value, version: &str) -> Function {
    parse_function(doc, Path::new("."), version.into(), &AnyRuntime).expect("valid definition")
}
