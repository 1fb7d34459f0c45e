//! The bookkeeping scenarios against the in-memory forwarder: no root, no kernel. If one of
//! these fails while the kernel backends pass it, the fake the daemon's tests rely on has
//! drifted from the real backends.

use fasp_proxy::dataplane::memory::{Call, MemoryForwarder};
use fasp_proxy::dataplane::{Backend, Forwarder};

use crate::scenarios;

#[test]
fn install_list_refresh_remove() {
    scenarios::install_list_refresh_remove(&mut MemoryForwarder::new());
}

#[test]
fn a_taken_key_is_refused_and_the_first_entry_untouched() {
    scenarios::a_taken_key_is_refused_and_the_first_entry_untouched(&mut MemoryForwarder::new());
}

#[test]
fn port_and_any_port_keys_are_distinct() {
    scenarios::port_and_any_port_keys_are_distinct(&mut MemoryForwarder::new());
}

#[test]
fn reconcile_keeps_live_sessions_and_drops_the_rest() {
    scenarios::reconcile_keeps_live_sessions_and_drops_the_rest(&mut MemoryForwarder::new());
}

#[test]
fn purge_removes_everything_twice_in_a_row() {
    scenarios::purge_removes_everything_twice_in_a_row(&mut MemoryForwarder::new());
}

#[test]
fn a_boxed_forwarder_is_still_observed_through_its_handle() {
    let fw = MemoryForwarder::new();
    let handle = fw.handle();
    let mut boxed: Box<dyn Forwarder> = Box::new(fw);
    assert_eq!(boxed.kind(), Backend::Memory);
    boxed.prepare().unwrap();
    scenarios::install_list_refresh_remove(&mut *boxed);
    let calls = handle.calls();
    assert_eq!(calls.first(), Some(&Call::Prepare));
    assert!(
        calls.iter().any(|c| matches!(c, Call::Refresh(_))),
        "{calls:?}"
    );
    assert!(handle.installed().is_empty());
}

#[test]
fn a_tcp_twin_is_listed_with_its_session_and_shares_its_key() {
    scenarios::a_tcp_twin_is_listed_with_its_session_and_shares_its_key(&mut MemoryForwarder::new());
}
