//! The forward proxy: inside users reach outside servers through the proxy, which hides their
//! addresses. IBM's `ascp --proxy dnat[s]://user:pass@proxy:9091` asks the proxy's HTTP API for
//! a forwarding (`POST /proxy/open`), then connects to the port it is given; the kernel
//! forwards that port's TCP (the SSH session) and UDP (the FASP data) to the server, with the
//! proxy's address as the source.
//!
//! Files: [`wire`] reads and writes the API's bodies; [`table`] hands out ids and ports and
//! expires forwardings; [`users`] keeps the node-API users; [`destinations`] decides which
//! servers may be reached; [`service`] does each call (authenticate, check, install, log);
//! [`api`] is the HTTP/HTTPS server around it.

pub mod api;
pub mod destinations;
pub mod service;
pub mod table;
pub mod users;
pub mod wire;
