//! MP-FGVC's model pieces (METHODS §5): the vision-language fusion module (VLFM), the trainable end of the
//! vision tower, and the trainable linear maps they are made of. The DaTP prompts are in `prompt::datp`,
//! the two training stages in `train::mpfgvc`, a whole run in `run::mpfgvc`.

pub mod params;
pub mod tail;
pub mod vlfm;
