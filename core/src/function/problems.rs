//! Validation problems: every error of a function file, each with its JSON path.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong in a function definition, at a JSON path such as `steps.step-2.after[0].step`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// JSON path of the offending value (empty for the document itself).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// All problems of one function file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The file (`…/weir.json`) or directory concerned.
    pub file: PathBuf,
    /// Every problem found, in document order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {p}", self.file.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

impl From<LoadError> for crate::Error {
    fn from(e: LoadError) -> Self {
        crate::Error::invalid(e.to_string())
    }
}

/// Collects problems while walking a document.
#[derive(Debug, Default)]
pub(crate) struct Problems(pub(crate) Vec<Problem>);

impl Problems {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}
