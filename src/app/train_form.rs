//! The Train tab's settings as data (remembered between launches): a run of each method, edited in place
//! by `train_panel`, so the form and the CLI share one set of defaults and one validation.

use crate::prompt::PromptMethodKind;
use crate::train::config::{AdapterMethod, AdapterRun, CoopRun, MpFgvcRun, PretrainRun, RunConfig};

/// The form's state: a run of each method, edited in place, so the form and the CLI share one set of
/// defaults (`CoopRun::default()`, `MpFgvcRun::default()`) and one validation (`RunConfig::validate`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TrainForm {
    pub kind: TrainKind,
    pub adapter: AdapterRun,
    pub coop: CoopRun,
    /// CoCoOp's run: CoOp's settings with its own recipe and the meta-net on.
    pub cocoop: CoopRun,
    pub mpfgvc: MpFgvcRun,
    pub pretrain: PretrainRun,
}

/// What the form trains: prompts (with one of the prompt methods), a feature adapter, or a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrainKind {
    Prompts(PromptMethodKind),
    /// Tip-Adapter, -F or CLIP-Adapter on the image features.
    Adapters,
    /// Both towers of a model, on image–caption pairs.
    Pretrain,
}

impl Default for TrainKind {
    fn default() -> Self {
        TrainKind::Prompts(PromptMethodKind::default())
    }
}

impl Default for TrainForm {
    fn default() -> Self {
        Self {
            kind: TrainKind::default(),
            adapter: AdapterRun::default(),
            coop: CoopRun::default(),
            cocoop: CoopRun::cocoop_recipe(),
            mpfgvc: MpFgvcRun::default(),
            pretrain: PretrainRun::default(),
        }
    }
}

impl TrainForm {
    /// The run the form describes, or why it cannot start.
    pub fn to_run(&self) -> crate::Result<RunConfig> {
        let run = match self.kind {
            TrainKind::Pretrain => RunConfig::Pretrain(self.pretrain.clone()),
            TrainKind::Adapters => RunConfig::Adapter(self.adapter.clone()),
            TrainKind::Prompts(PromptMethodKind::Coop) => RunConfig::Coop(self.coop.clone()),
            TrainKind::Prompts(PromptMethodKind::Cocoop) => RunConfig::Coop(self.cocoop.clone()),
            TrainKind::Prompts(PromptMethodKind::Datp) => RunConfig::MpFgvc(self.mpfgvc.clone()),
        };
        run.validate()?;
        Ok(run)
    }

    /// `app --method M`: the method the Train tab opens on.
    pub fn start_with(&mut self, method: crate::startup::StartMethod) {
        use crate::startup::StartMethod;
        self.kind = match method {
            StartMethod::Coop => TrainKind::Prompts(PromptMethodKind::Coop),
            StartMethod::Cocoop => TrainKind::Prompts(PromptMethodKind::Cocoop),
            StartMethod::Mpfgvc => TrainKind::Prompts(PromptMethodKind::Datp),
            StartMethod::Pretrain | StartMethod::PretrainScenes => TrainKind::Pretrain,
        };
        if method == StartMethod::PretrainScenes {
            self.pretrain.use_demo_recipe();
        }
    }

    /// `app --epochs N`: the chosen method's epochs (each stage's, for MP-FGVC).
    pub fn set_epochs(&mut self, epochs: usize) {
        match self.kind {
            TrainKind::Pretrain => self.pretrain.config.optim.epochs = epochs,
            TrainKind::Adapters => {
                if let AdapterMethod::TipAdapterF { epochs: e }
                | AdapterMethod::ClipAdapter { epochs: e } = &mut self.adapter.method
                {
                    *e = epochs;
                }
            }
            TrainKind::Prompts(PromptMethodKind::Coop) => self.coop.train.optim.epochs = epochs,
            TrainKind::Prompts(PromptMethodKind::Cocoop) => self.cocoop.train.optim.epochs = epochs,
            TrainKind::Prompts(PromptMethodKind::Datp) => {
                self.mpfgvc.stage1.optim.epochs = epochs;
                self.mpfgvc.stage2.optim.epochs = epochs;
            }
        }
    }
}
