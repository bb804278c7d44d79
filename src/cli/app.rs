//! The `app` verb (and no verb at all): the desktop app, or an error that says so in a build without the
//! `gui` feature. Its flags are the app's own `Startup`.

use anyhow::Result;
use promptscope::startup::Startup;

/// No verb: the app on its first tab, with what it remembers.
pub fn open_default_app() -> Result<()> {
    open_app(Startup::default())
}

#[cfg(feature = "gui")]
pub fn open_app(startup: Startup) -> Result<()> {
    promptscope::app::run(startup)
}

#[cfg(not(feature = "gui"))]
pub fn open_app(startup: Startup) -> Result<()> {
    startup.validate()?;
    anyhow::bail!("this promptscope was built without the desktop app (feature `gui`); use a verb, see --help")
}
