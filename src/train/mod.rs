//! Training: optimiser, schedule, feature cache, jobs.
pub mod optim;
pub mod epoch_loop;
pub mod coop;
pub mod features;
pub mod pipeline;
