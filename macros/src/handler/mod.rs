//! `#[handler]`: parse the arguments (`attr`), classify the signature (`check`), generate
//! the registration (`expand`).

mod attr;
mod check;
mod expand;

pub(crate) use expand::expand;
