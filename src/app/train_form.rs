//! The Train tab's settings as data (remembered between launches): a run of each method, edited in place
//! by `train_panel`, so the form and the CLI share one set of defaults and one validation.

use crate::prompt::{CoopVariant, PromptMethodKind};
use crate::train::config::{AdapterMethod, AdapterRun, CoopRun, MpFgvcRun, PretrainRun, RunConfig};

/// The form's state: a run of each method, edited in place, so the form and the CLI share one set of
/// defaults (`CoopRun::default()`, `MpFgvcRun::default()`) and one validation (`RunConfig::validate`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TrainForm {
    pub kind: TrainKind,
    pub adapter: AdapterRun,
    pub coop: CoopRun,
    /// KgCoOp's run: CoOp's settings with its λ.
    pub kgcoop: CoopRun,
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
            kgcoop: CoopRun::kgcoop_recipe(),
            cocoop: CoopRun::cocoop_recipe(),
            mpfgvc: MpFgvcRun::default(),
            pretrain: PretrainRun::default(),
        }
    }
}

impl TrainForm {
    /// The run of a CoOp-family method's form; None for MP-FGVC.
    pub fn coop_run(&mut self, kind: PromptMethodKind) -> Option<&mut CoopRun> {
        match kind {
            PromptMethodKind::Coop => Some(&mut self.coop),
            PromptMethodKind::Kgcoop => Some(&mut self.kgcoop),
            PromptMethodKind::Cocoop => Some(&mut self.cocoop),
            PromptMethodKind::Datp => None,
        }
    }

    /// Each CoOp-family run in its own method's slot. Settings remembered before KgCoOp had its own form
    /// kept its λ in CoOp's: that run moves to KgCoOp's form, and the form opens there if it was open on
    /// CoOp.
    pub fn settled(mut self) -> Self {
        if let CoopVariant::Kgcoop { .. } = self.coop.variant {
            self.kgcoop = self.coop.clone();
            self.coop.variant = CoopVariant::Coop;
            if self.kind == TrainKind::Prompts(PromptMethodKind::Coop) {
                self.kind = TrainKind::Prompts(PromptMethodKind::Kgcoop);
            }
        }
        if self.kgcoop.variant.kind() != PromptMethodKind::Kgcoop {
            self.kgcoop.variant = CoopRun::kgcoop_recipe().variant;
        }
        self.cocoop.variant = CoopVariant::Cocoop;
        self.coop.variant = CoopVariant::Coop;
        self
    }

    /// The run the form describes, or why it cannot start.
    pub fn to_run(&self) -> crate::Result<RunConfig> {
        let run = match self.kind {
            TrainKind::Pretrain => RunConfig::Pretrain(self.pretrain.clone()),
            TrainKind::Adapters => RunConfig::Adapter(self.adapter.clone()),
            TrainKind::Prompts(PromptMethodKind::Coop) => RunConfig::Coop(self.coop.clone()),
            TrainKind::Prompts(PromptMethodKind::Kgcoop) => RunConfig::Coop(self.kgcoop.clone()),
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
            StartMethod::Kgcoop => TrainKind::Prompts(PromptMethodKind::Kgcoop),
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
            TrainKind::Prompts(PromptMethodKind::Datp) => {
                self.mpfgvc.stage1.optim.epochs = epochs;
                self.mpfgvc.stage2.optim.epochs = epochs;
            }
            TrainKind::Prompts(kind) => {
                if let Some(r) = self.coop_run(kind) {
                    r.train.optim.epochs = epochs;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings remembered before KgCoOp had its own form: CoOp's run held λ in `train.kg_lambda` and
    /// CoCoOp's run said `cocoop: true`. They open on KgCoOp's form with the same λ, and CoOp's and
    /// CoCoOp's forms keep the rest of what was set.
    #[test]
    fn settings_from_before_the_kgcoop_form_open_on_it_with_their_lambda() {
        let mut j = serde_json::to_value(TrainForm::default()).unwrap();
        let o = j.as_object_mut().unwrap();
        o.remove("kgcoop");
        for (slot, cocoop, lambda) in [("coop", false, 3.5), ("cocoop", true, 0.0)] {
            let run = o[slot].as_object_mut().unwrap();
            run.remove("variant");
            run.insert("cocoop".into(), cocoop.into());
            run["train"]["kg_lambda"] = lambda.into();
            run["views"] = 7.into();
        }
        let form = serde_json::from_value::<TrainForm>(j).unwrap().settled();
        assert_eq!(form.kind, TrainKind::Prompts(PromptMethodKind::Kgcoop));
        assert_eq!(form.kgcoop.variant, CoopVariant::Kgcoop { lambda: 3.5 });
        assert_eq!(
            (form.kgcoop.views, form.coop.views, form.cocoop.views),
            (7, 7, 7)
        );
        assert_eq!(form.coop.variant, CoopVariant::Coop);
        assert_eq!(form.cocoop.variant, CoopVariant::Cocoop);
        assert_eq!(
            form.to_run().unwrap(),
            RunConfig::Coop(form.kgcoop.clone()),
            "the run it starts is the remembered KgCoOp run"
        );
        // Today's settings are settled already.
        assert_eq!(TrainForm::default().settled(), TrainForm::default());
    }
}
