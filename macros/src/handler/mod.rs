//! `#[handler]`: parse the arguments (`attr`), classify the function's arguments into a
//! model (`ast`), check the signature (`check`), generate the registration (`expand`).

mod ast;
mod attr;
mod check;
mod expand;

pub(crate) use expand::expand;
