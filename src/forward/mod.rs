//! The forward proxy: inside users reach outside servers through the proxy, which hides their
//! addresses. IBM's `ascp --proxy dnat[s]://user:pass@proxy:9091` asks the proxy's HTTP API for
//! a forwarding (`POST /proxy/open`), then connects to the port it is given; the kernel
//! forwards that port's TCP (the SSH session) and UDP (the FASP data) to the server, with the
//! proxy's address as the source.

pub mod table;
pub mod users;
pub mod wire;
