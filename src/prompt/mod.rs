//! Prompts: templates, CoOp contexts.

pub mod coop;
