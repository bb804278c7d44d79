//! The Train tab's settings as data (remembered between launches): a run of each method, edited in place
//! by `train_panel`, so the form and the CLI share one set of defaults and one validation.

use crate::prompt::PromptMethodKind;
use crate::train::config::{CoopRun, MpFgvcRun, PretrainRun, RunConfig};

/// The form's state: a run of each method, edited in place, so the form and the CLI share one set of
/// defaults (`CoopRun::default()`, `MpFgvcRun::default()`) and one validation (`RunConfig::validate`).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TrainForm {
    pub method: PromptMethodKind,
    /// Pretraining a model (both towers) instead of learning prompts for one.
    pub pretraining: bool,
    pub coop: CoopRun,
    pub mpfgvc: MpFgvcRun,
    pub pretrain: PretrainRun,
}

impl TrainForm {
    /// The run the form describes, or why it cannot start.
    pub fn to_run(&self) -> crate::Result<RunConfig> {
        let run = match (self.pretraining, self.method) {
            (true, _) => RunConfig::Pretrain(self.pretrain.clone()),
            (false, PromptMethodKind::Coop) => RunConfig::Coop(self.coop.clone()),
            (false, PromptMethodKind::Datp) => RunConfig::MpFgvc(self.mpfgvc.clone()),
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
        match self.method {
            PromptMethodKind::Coop => self.coop.train.optim.epochs = epochs,
            PromptMethodKind::Datp => {
                self.mpfgvc.stage1.optim.epochs = epochs;
                self.mpfgvc.stage2.optim.epochs = epochs;
            }
        }
    }
}
