//! Tools that drive a Folio database as an application would, through
//! `folio`'s sessions: the load generator (`folio bench`) and the
//! torture harness (`folio torture`). Both name what they drive with a
//! [`folio::Location`] (see [`target`]).

pub mod bench;
pub mod target;
pub mod torture;
