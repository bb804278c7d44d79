//! Every integration test in one crate: one binary links egui, wgpu and candle once instead of once per
//! file (the separate binaries were most of a fresh `cargo test`). Each module is one area; run one with
//! `cargo test --test integration -- clip_parity::`.

mod common;

mod adapter_parity;
mod align_cli;
mod align_parity;
mod align_region;
mod app_first_hour;
mod app_ui;
mod cli;
mod clip_parity;
mod coop_cli;
mod coop_parity;
mod demo_claims;
mod family_parity;
mod filip_parity;
mod fused_ops;
mod fuzz_loaders;
mod kill_safety;
mod maps_parity;
mod mpfgvc_cli;
mod mpfgvc_two_stage;
mod overlay_gpu;
mod preprocess_parity;
mod pretrain_cli;
mod resample_pil;
mod run_config;
mod run_seam;
mod shared_prefix;
mod sweep;
mod tip_parity;
mod tokenizer_parity;
mod vlfm_parity;
mod webdataset;
