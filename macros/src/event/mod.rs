//! `#[derive(Event)]`: parse (`attr`), check (`check`), generate (`expand`).

mod attr;
mod check;
mod expand;
mod lock;

pub(crate) use attr::path_str;
pub(crate) use expand::expand;
