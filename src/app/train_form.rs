//! The Train tab's settings as data (remembered between launches): a run of each method, edited in place
//! by `train_panel`, so the form and the CLI share one set of defaults and one validation.

use crate::prompt::PromptMethodKind;
use crate::train::config::{AdapterMethod, AdapterRun, CoopRun, MpFgvcRun, PretrainRun, RunConfig};

/// The form's state: a run of each method, edited in place, so the form and the CLI share one set of
/// defaults (`CoopRun::default()`, `MpFgvcRun::default()`) and one validation (`RunConfig::validate`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TrainForm {
    pub method: PromptMethodKind,
    /// Pretraining a model (both towers) instead of learning prompts for one.
    pub pretraining: bool,
    /// A feature-level baseline (Tip-Adapter, -F, CLIP-Adapter) instead of learning prompts.
    pub adapting: bool,
    pub adapter: AdapterRun,
    pub coop: CoopRun,
    /// CoCoOp's run: CoOp's settings with its own recipe and the meta-net on.
    pub cocoop: CoopRun,
    pub mpfgvc: MpFgvcRun,
    pub pretrain: PretrainRun,
}

impl Default for TrainForm {
    fn default() -> Self {
        Self {
            method: PromptMethodKind::default(),
            pretraining: false,
            adapting: false,
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
        let run = match (self.pretraining, self.adapting, self.method) {
            (true, _, _) => RunConfig::Pretrain(self.pretrain.clone()),
            (false, true, _) => RunConfig::Adapter(self.adapter.clone()),
            (false, false, PromptMethodKind::Coop) => RunConfig::Coop(self.coop.clone()),
            (false, false, PromptMethodKind::Cocoop) => RunConfig::Coop(self.cocoop.clone()),
            (false, false, PromptMethodKind::Datp) => RunConfig::MpFgvc(self.mpfgvc.clone()),
        };
        run.validate()?;
        Ok(run)
    }

    /// `app --epochs N`: the chosen method's epochs (each stage's, for MP-FGVC).
    pub fn set_epochs(&mut self, epochs: usize) {
        if self.pretraining {
            self.pretrain.config.optim.epochs = epochs;
            return;
        }
        if self.adapting {
            if let AdapterMethod::TipAdapterF { epochs: e }
            | AdapterMethod::ClipAdapter { epochs: e } = &mut self.adapter.method
            {
                *e = epochs;
            }
            return;
        }
        match self.method {
            PromptMethodKind::Coop => self.coop.train.optim.epochs = epochs,
            PromptMethodKind::Cocoop => self.cocoop.train.optim.epochs = epochs,
            PromptMethodKind::Datp => {
                self.mpfgvc.stage1.optim.epochs = epochs;
                self.mpfgvc.stage2.optim.epochs = epochs;
            }
        }
    }
}
