//! How the desktop app opens: its tab, what it loads, what it starts. These are the `app` verb's flags
//! (`clap::Args`), defined once here, outside the `gui` feature, so a headless build still parses the
//! command line and says it cannot open a window.

use std::path::PathBuf;

use crate::align::maps::MapMethod;

/// The app's tabs (`app --tab`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Tab {
    #[default]
    Compare,
    Train,
    Align,
    Export,
}

impl Tab {
    pub const ALL: [Tab; 4] = [Tab::Compare, Tab::Train, Tab::Align, Tab::Export];

    pub fn label(self) -> &'static str {
        match self {
            Tab::Compare => "Compare",
            Tab::Train => "Train",
            Tab::Align => "Align",
            Tab::Export => "Export",
        }
    }
}

/// The Train tab's method at start-up (`app --method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StartMethod {
    Coop,
    Kgcoop,
    Cocoop,
    Mpfgvc,
    /// Pretraining, from a folder of pairs.
    Pretrain,
    /// Pretraining on generated scenes streamed each epoch (the shape-aware recipe).
    PretrainScenes,
}

/// How the window opens: what it loads, which tab, and whether to start that tab's job once loaded.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Startup {
    /// A model to load at start-up (default: the last session's).
    #[arg(long)]
    pub model: Option<String>,
    /// A dataset folder to open at start-up (default: the last session's).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The tab to open.
    #[arg(long, value_enum, default_value_t)]
    pub tab: Tab,
    /// Once the model and dataset are loaded, run the tab's main job (zero-shot on Compare,
    /// training with the remembered settings on Train): for demos and screenshots.
    #[arg(long)]
    pub autorun: bool,
    /// Training epochs for --autorun on the Train tab (default: the remembered setting).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// A prompts file to load once the model is loaded (it joins Compare, Align and Export); repeat
    /// for several.
    #[arg(long)]
    pub prompts: Vec<PathBuf>,
    /// Open the Align tab's side-by-side view (the class word's map under each prompt).
    #[arg(long)]
    pub side_by_side: bool,
    /// Open Compare in its base-to-novel mode (with --autorun: run it with the remembered methods).
    #[arg(long)]
    pub base_to_novel: bool,
    /// A sweep's manifest (`sweep plan --out`) whose results open in Compare's base-to-novel mode.
    #[arg(long)]
    pub sweep: Option<PathBuf>,
    /// Open the Align tab comparing these map methods (a comma list, at most six).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub compare_methods: Vec<MapMethod>,
    /// With --autorun on the Align tab: evaluate the maps (the pointing game) at start-up.
    #[arg(long)]
    pub evaluate_maps: bool,
    /// The Train tab's method (default: the remembered one); with mpfgvc, --super-category names
    /// the word its prompts end with.
    #[arg(long, value_enum)]
    pub method: Option<StartMethod>,
    #[arg(long)]
    pub super_category: Option<String>,
}

/// Side by side, the Align tab shows at most this many map methods.
pub const COMPARE_MAX: usize = 6;

impl Startup {
    /// The checks that need no window, so a bad flag is refused before one opens.
    pub fn validate(&self) -> crate::Result<()> {
        if self.compare_methods.len() > COMPARE_MAX {
            return Err(crate::Error::invalid(format!(
                "--compare-methods: at most {COMPARE_MAX} methods side by side, not {}",
                self.compare_methods.len()
            )));
        }
        Ok(())
    }
}
