//! Training: the one epoch loop and the trainers on it (CoOp, MP-FGVC's two stages), their optimisers
//! and schedule, the run descriptions both front ends fill (`config`), and the image-feature cache.
pub mod adapters;
pub mod checkpoint;
pub mod cocoop;
pub mod config;
pub mod contrastive;
pub mod coop;
pub mod epoch_loop;
pub mod feature_store;
pub mod features;
pub mod mpfgvc;
pub mod optim;
pub mod pairs;
pub mod pretrain;
pub mod shard_pairs;
pub mod tip_adapter;
