//! The inbound side: the services this node serves (allow-lists, L7 rules, backends) with the
//! one `authorize`, and the listener peer nodes connect to.
pub(crate) mod listener;
