//! IBM's `aspera.conf` schema as a table of tag paths, so that files written for IBM's products
//! load as they are.
//!
//! The tags fasp-proxy acts on are in [`schema`](super::schema) and checked as always. A tag that
//! only IBM's schema has is accepted with one warning ("not used by fasp-proxy") and ignored,
//! together with whatever IBM's schema allows inside it; its values are not checked. A tag in
//! neither schema stays an error, with a "did you mean" that may name an IBM tag.
//!
//! Where the table comes from: `docs/aspera.conf.xsd` in IBM's aspera-cli repository
//! (<https://github.com/IBM/aspera-cli>, commit f7064646194dcebdc508edc64dc45d7322c2c3ce), the
//! schema of IBM Aspera build 4.4.7, published by IBM under the Apache License 2.0. Only facts are
//! taken from it: element names, their nesting, which elements repeat (`maxOccurs="unbounded"`)
//! and the attributes; none of its documentation text, and no value types (values are not
//! checked). The table was generated from the XSD and checked by hand against it. Deliberate
//! differences: the schema's root element is `conf` while every file says `CONF`; the schema
//! defines `<default><file_system>` twice (once for transfer settings, once for `<access>`), merged
//! here into one entry; the five "sets of string values" the XSD types as text with an "XML
//! separator" are sections holding that separator, repeated, as IBM's files write them
//! (`<aspshell_commands><command>`, `<filters><filter>`, `<restrictions><restriction>`,
//! `<pvcl><blacklist>` and `<whitelist>` with `<opt>`); and `<aaa>`, which the XSD lacks, comes
//! from IBM's guides ([`AAA`]).
//!
//! Not every IBM tag may be ignored: those that narrow what users reach are refused
//! ([`refused`](super::refused)).
//!
//! Also here: the reconciliation of IBM's per-rule `<forwarding_type>` with the server-level one,
//! since the daemon has a single data-plane backend ([`one_forwarding_type`]).

use super::diagnostic::{Diagnostic, Pos};
use super::model::ForwardingType;
use super::suggest;

/// One element of IBM's schema.
#[derive(Debug)]
pub struct Node {
    /// The element name.
    pub name: &'static str,
    /// Whether the element may appear more than once in its parent.
    pub repeated: bool,
    /// The elements allowed inside; empty for an element that holds a value.
    pub children: &'static [Node],
    /// The attributes allowed on the element.
    pub attributes: &'static [&'static str],
}

impl Node {
    /// The child element called `name`, if IBM's schema allows one here. `<aaa>`, which the
    /// XSD leaves out, is a child of the root ([`AAA`]).
    pub fn child(&self, name: &str) -> Option<&'static Node> {
        if std::ptr::eq(self, &ROOT) && name == AAA.name {
            return Some(&AAA);
        }
        self.children.iter().find(|n| n.name == name)
    }

    /// Whether the element holds a value rather than other elements.
    pub fn is_leaf(&self) -> bool {
        self.children.is_empty()
    }
}

const fn leaf(name: &'static str) -> Node {
    Node {
        name,
        repeated: false,
        children: &[],
        attributes: &[],
    }
}

const fn leaf_list(name: &'static str) -> Node {
    Node {
        repeated: true,
        ..leaf(name)
    }
}

const fn section(name: &'static str, children: &'static [Node]) -> Node {
    Node {
        name,
        repeated: false,
        children,
        attributes: &[],
    }
}

const fn section_list(name: &'static str, children: &'static [Node]) -> Node {
    Node {
        repeated: true,
        ..section(name, children)
    }
}

/// The value IBM's schema fixes for `<CONF version="…">`.
pub const CONF_VERSION: &str = "2";

/// The root `<CONF>` of IBM's schema and everything below it.
pub static ROOT: Node = Node {
    name: "CONF",
    repeated: false,
    children: ROOT_CHILDREN,
    attributes: &["version"],
};

/// `<aaa>`, the users' and groups' own settings, as IBM's guides document it (the XSD does not
/// have it): `<realms><realm>` with `<users><user>` and `<groups><group>`, each holding what
/// `<default>` may hold (its `<name>` among it).
pub static AAA: Node = section(
    "aaa",
    &[section(
        "realms",
        &[section(
            "realm",
            &[
                section("users", &[section_list("user", DEFAULT)]),
                section("groups", &[section_list("group", DEFAULT)]),
            ],
        )],
    )],
);

// ---- The table, generated from aspera.conf.xsd: one constant per section, named by its path. ----

const ROOT_CHILDREN: &[Node] = &[
    section("default", DEFAULT),
    section("trunks", TRUNKS),
    section("central_server", CENTRAL_SERVER),
    section("http_server", HTTP_SERVER),
    section("database", DATABASE),
    section("server", SERVER),
    section("logging", LOGGING),
    section("client", CLIENT),
];
const DEFAULT: &[Node] = &[
    leaf("user_value"),
    leaf("name"),
    leaf("group"),
    leaf("group_ownership"),
    leaf("connection_timeout_sec"),
    leaf("session_timeout_sec"),
    leaf("ssh_startup_timeout_sec"),
    section("authorization", DEFAULT_AUTHORIZATION),
    section("transfer", DEFAULT_TRANSFER),
    section_list("file_system", DEFAULT_FILE_SYSTEM),
    section("pvcl", DEFAULT_PVCL),
    leaf("max_mem"),
    section("pvdr", DEFAULT_PVDR),
    leaf("file_checksum"),
    leaf("async_activity_logging"),
    leaf("async_log_dir"),
    leaf("async_log_level"),
    leaf("async_db_dir"),
    leaf("async_db_spec"),
    leaf("async_enabled"),
    leaf("async_connection_timeout_sec"),
    leaf("async_session_timeout_sec"),
    leaf("async_inactivity_timeout_sec"),
    leaf("async_cache_invalidate_limit"),
    leaf("async_watchd"),
    section("async_lock", DEFAULT_ASYNC_LOCK),
    leaf("async_db_store_dir"),
    leaf("async_support_resume"),
    leaf("async_resume_age_days"),
    leaf("min_ascp_version"),
    leaf("min_async_version"),
    section("watch", DEFAULT_WATCH),
    leaf("use_pvcl"),
    section("ascmd", DEFAULT_ASCMD),
    leaf("precedence"),
    section("aspshell_commands", &[leaf_list("command")]),
    leaf("ignore_direction"),
    leaf("logging_class"),
    leaf("skip_dir_traversal_dupes"),
    section("logging", DEFAULT_LOGGING),
];
const DEFAULT_AUTHORIZATION: &[Node] = &[
    section("transfer", DEFAULT_AUTHORIZATION_TRANSFER),
    section("token", DEFAULT_AUTHORIZATION_TOKEN),
];
const DEFAULT_AUTHORIZATION_TRANSFER: &[Node] = &[
    section("in", DEFAULT_AUTHORIZATION_TRANSFER_IN),
    section("out", DEFAULT_AUTHORIZATION_TRANSFER_OUT),
];
const DEFAULT_AUTHORIZATION_TRANSFER_IN: &[Node] = &[
    leaf("value"),
    section(
        "external_provider",
        DEFAULT_AUTHORIZATION_TRANSFER_IN_EXTERNAL_PROVIDER,
    ),
];
const DEFAULT_AUTHORIZATION_TRANSFER_IN_EXTERNAL_PROVIDER: &[Node] =
    &[leaf("url"), leaf("soap_action")];
const DEFAULT_AUTHORIZATION_TRANSFER_OUT: &[Node] = &[
    leaf("value"),
    section(
        "external_provider",
        DEFAULT_AUTHORIZATION_TRANSFER_OUT_EXTERNAL_PROVIDER,
    ),
];
const DEFAULT_AUTHORIZATION_TRANSFER_OUT_EXTERNAL_PROVIDER: &[Node] =
    &[leaf("url"), leaf("soap_action")];
const DEFAULT_AUTHORIZATION_TOKEN: &[Node] = &[
    leaf("encryption_type"),
    leaf("encryption_key"),
    leaf("key_file"),
    leaf("life_seconds"),
    leaf("filename_hash"),
    leaf("dynamic_key"),
];
const DEFAULT_TRANSFER: &[Node] = &[
    section("in", DEFAULT_TRANSFER_DIRECTION),
    section("out", DEFAULT_TRANSFER_DIRECTION),
    section("encryption", DEFAULT_TRANSFER_ENCRYPTION),
    section("protocol_options", DEFAULT_TRANSFER_PROTOCOL_OPTIONS),
    leaf("log_files_activity"),
    leaf("log_stats_interval"),
    leaf("validation_file_start"),
    leaf("validation_file_stop"),
    leaf("validation_session_start"),
    leaf("validation_session_stop"),
    leaf("validation_threshold"),
    leaf("validation_uri"),
    leaf("validation_threshold_kb"),
    leaf("validation_threads"),
    leaf("validation_secure"),
    leaf("lua_session_start_script_base64"),
    leaf("lua_session_start_script_path"),
    leaf("lua_session_stop_script_base64"),
    leaf("lua_session_stop_script_path"),
    leaf("lua_file_start_script_base64"),
    leaf("lua_file_start_script_path"),
    leaf("lua_session_progress_script_base64"),
    leaf("lua_session_progress_script_path"),
    leaf("lua_file_stop_script_base64"),
    leaf("lua_file_stop_script_path"),
    leaf("multi_session_threshold_default"),
    leaf("multi_session_enabled"),
    leaf("chunker_max_mem"),
];
/// `<default><transfer><in>` and `<out>`: the same tags in either direction.
const DEFAULT_TRANSFER_DIRECTION: &[Node] =
    &[section("bandwidth", DEFAULT_TRANSFER_DIRECTION_BANDWIDTH)];
const DEFAULT_TRANSFER_DIRECTION_BANDWIDTH: &[Node] = &[
    section("aggregate", DEFAULT_TRANSFER_DIRECTION_BANDWIDTH_AGGREGATE),
    section("flow", DEFAULT_TRANSFER_DIRECTION_BANDWIDTH_FLOW),
];
const DEFAULT_TRANSFER_DIRECTION_BANDWIDTH_AGGREGATE: &[Node] = &[leaf("trunk_id")];
const DEFAULT_TRANSFER_DIRECTION_BANDWIDTH_FLOW: &[Node] = &[
    section(
        "target_rate",
        DEFAULT_TRANSFER_DIRECTION_BANDWIDTH_FLOW_TARGET_RATE,
    ),
    section(
        "min_rate",
        DEFAULT_TRANSFER_DIRECTION_BANDWIDTH_FLOW_MIN_RATE,
    ),
    section("policy", DEFAULT_TRANSFER_DIRECTION_BANDWIDTH_FLOW_POLICY),
    section(
        "priority",
        DEFAULT_TRANSFER_DIRECTION_BANDWIDTH_FLOW_PRIORITY,
    ),
    section(
        "aggressiveness",
        DEFAULT_TRANSFER_DIRECTION_BANDWIDTH_FLOW_AGGRESSIVENESS,
    ),
    section(
        "network_rc",
        DEFAULT_TRANSFER_DIRECTION_BANDWIDTH_FLOW_NETWORK_RC,
    ),
];
const DEFAULT_TRANSFER_DIRECTION_BANDWIDTH_FLOW_TARGET_RATE: &[Node] =
    &[leaf("cap"), leaf("default"), leaf("lock")];
const DEFAULT_TRANSFER_DIRECTION_BANDWIDTH_FLOW_MIN_RATE: &[Node] =
    &[leaf("cap"), leaf("default"), leaf("lock")];
const DEFAULT_TRANSFER_DIRECTION_BANDWIDTH_FLOW_POLICY: &[Node] =
    &[leaf("default"), leaf("lock"), leaf("allowed")];
const DEFAULT_TRANSFER_DIRECTION_BANDWIDTH_FLOW_PRIORITY: &[Node] =
    &[leaf("cap"), leaf("default"), leaf("lock")];
const DEFAULT_TRANSFER_DIRECTION_BANDWIDTH_FLOW_AGGRESSIVENESS: &[Node] =
    &[leaf("cap"), leaf("default")];
const DEFAULT_TRANSFER_DIRECTION_BANDWIDTH_FLOW_NETWORK_RC: &[Node] = &[
    leaf("module"),
    leaf("tcp_friendly"),
    leaf("predictor"),
    leaf("predictor_range"),
    leaf("predictor_limit_range"),
    leaf("target_queue"),
];
const DEFAULT_TRANSFER_ENCRYPTION: &[Node] = &[
    leaf("user_value"),
    leaf("allowed_cipher"),
    leaf("strict_allowed_cipher"),
    leaf("fips_mode"),
    leaf("byok_enabled"),
    leaf("content_protection_required"),
    leaf("content_protection_secret"),
    leaf("content_protection_strong_pass_required"),
    leaf("extension"),
];
const DEFAULT_TRANSFER_PROTOCOL_OPTIONS: &[Node] = &[
    leaf("bind_ip_address"),
    leaf("server_ip_address"),
    leaf("bind_udp_port"),
    leaf("udp_port_reuse"),
    leaf("disable_batching"),
    leaf("batch_size"),
    leaf("sessini_optimization"),
    leaf("max_sock_buffer"),
    leaf("min_sock_buffer"),
    leaf("datagram_size"),
    leaf("rate_instru_type"),
    leaf("rtt_autocorrect"),
    leaf("rtt_histlen"),
    leaf("rtt_variation_index"),
    leaf("rtt_estimate_skew"),
    leaf("rtt_reverse_infer"),
    leaf("rtt_show_dist_on_congestion"),
    leaf("rex_table_size"),
    leaf("rex_timer_size"),
    leaf("chunk_size"),
];
const DEFAULT_FILE_SYSTEM: &[Node] = &[
    leaf("file_create_mode"),
    leaf("file_create_grant_mask"),
    leaf("directory_create_mode"),
    leaf("directory_create_grant_mask"),
    leaf("read_block_size"),
    leaf("write_block_size"),
    leaf("read_threads"),
    leaf("write_threads"),
    leaf("scan_threads"),
    leaf("meta_threads"),
    leaf("worker_threads"),
    leaf("sparse_file"),
    leaf("fail_on_attr_error"),
    leaf("compression_method"),
    leaf("use_file_cache"),
    leaf("max_file_cache_buffer"),
    leaf("ring_buf_units"),
    leaf("ring_buf_max_size"),
    leaf("resume_suffix"),
    leaf("symbolic_links"),
    leaf("mgmt_portfile_dir"),
    leaf("mgmt_port_connect_timeout_usec"),
    leaf("preserve_attributes"),
    leaf("preserve_acls"),
    leaf("preserve_xattrs"),
    leaf("preserve_attributes_pvcl_read"),
    leaf("preserve_attributes_pvcl_write"),
    leaf("overwrite"),
    leaf("file_manifest"),
    leaf("file_manifest_path"),
    leaf("file_manifest_inprogress_suffix"),
    leaf("pre_calculate_job_size"),
    leaf("replace_illegal_chars"),
    section("storage_rc", DEFAULT_FILE_SYSTEM_STORAGE_RC),
    section("filters", &[leaf_list("filter")]),
    leaf("partial_file_suffix"),
    leaf("file_checksum"),
    leaf("file_checksum_cache"),
    leaf("file_checksum_on_write"),
    section("access", DEFAULT_FILE_SYSTEM_ACCESS),
];
const DEFAULT_FILE_SYSTEM_STORAGE_RC: &[Node] = &[
    leaf("adaptive"),
    leaf("buf_min"),
    leaf("buf_target"),
    leaf("buf_delta"),
];
const DEFAULT_FILE_SYSTEM_ACCESS: &[Node] = &[section("paths", DEFAULT_FILE_SYSTEM_ACCESS_PATHS)];
const DEFAULT_FILE_SYSTEM_ACCESS_PATHS: &[Node] =
    &[section_list("path", DEFAULT_FILE_SYSTEM_ACCESS_PATHS_PATH)];
const DEFAULT_FILE_SYSTEM_ACCESS_PATHS_PATH: &[Node] = &[
    leaf("absolute"),
    leaf("show_as"),
    leaf("description"),
    leaf_list("filter"),
    leaf("filter_scope"),
    leaf("read_allowed"),
    leaf("write_allowed"),
    leaf("dir_allowed"),
    leaf("reporting_allowed"),
    section("restrictions", &[leaf_list("restriction")]),
];
const DEFAULT_PVCL: &[Node] = &[
    leaf("log_stats_interval"),
    leaf("chunk_size"),
    leaf("io_direct"),
    leaf("io_sync"),
    leaf("max_wfd"),
    leaf("max_mem"),
    leaf("max_thr_wbps"),
    section("blacklist", &[leaf_list("opt")]),
    section("whitelist", &[leaf_list("opt")]),
    leaf("cmd_timeout"),
    section(
        "download_target_rate_strategy",
        DEFAULT_PVCL_DOWNLOAD_TARGET_RATE_STRATEGY,
    ),
    section("plugin", DEFAULT_PVCL_PLUGIN),
    leaf("browse_partial_extension"),
    leaf("browse_partial_included"),
    leaf("browse_partial_include_details"),
    leaf("browse_mkdir_allowed"),
    leaf("browse_file_permission"),
    leaf("browse_file_readable_permission"),
    leaf("browse_file_writable_permission"),
    leaf("browse_directory_permission"),
    leaf("symlink_supported"),
    leaf("delete_before_upload"),
    leaf("max_file_size"),
    leaf("max_part_size"),
    leaf("min_part_size"),
    leaf("max_part_count"),
    leaf("max_single_put"),
    leaf("max_upload_size"),
    leaf("max_retry_count"),
    leaf("max_thread_count"),
    section("download", DEFAULT_PVCL_DOWNLOAD),
    section("upload", DEFAULT_PVCL_UPLOAD),
    leaf("allow_cross_region"),
    leaf("force_region"),
    section("ssl", DEFAULT_PVCL_SSL),
    leaf("check_dir_before_upload"),
    section("iam", DEFAULT_PVCL_IAM),
    leaf("s3fox_directory_supported"),
    leaf("endpoint_force_from_uri"),
    leaf("project_id"),
    leaf("segment_dir"),
    leaf("aspera_transfer_meta_key"),
    leaf("aspera_transfer_meta_value"),
    leaf("start_check_small_file"),
    section("sts", DEFAULT_PVCL_STS),
    section("multi_session", DEFAULT_PVCL_MULTI_SESSION),
    leaf("http_user_agent"),
    leaf("http_connection_timeout_sec"),
    leaf("payload_checksum_algo"),
    leaf("disable_dns_buckets"),
    leaf("https_only"),
    leaf("hierarchical_mode"),
    leaf("s3glacier_supported"),
    leaf("retrieve_dir_last_modified"),
];
const DEFAULT_PVCL_DOWNLOAD_TARGET_RATE_STRATEGY: &[Node] = &[leaf("target_rate"), leaf("policy")];
const DEFAULT_PVCL_PLUGIN: &[Node] = &[leaf("checksum")];
const DEFAULT_PVCL_DOWNLOAD: &[Node] = &[
    leaf("max_thread_count"),
    leaf("min_range_size"),
    section("largevm", DEFAULT_PVCL_DOWNLOAD_LARGEVM),
];
const DEFAULT_PVCL_DOWNLOAD_LARGEVM: &[Node] = &[
    leaf("max_thread_count"),
    leaf("min_range_size"),
    leaf("min_cpus"),
    leaf("min_ram"),
];
const DEFAULT_PVCL_UPLOAD: &[Node] = &[
    leaf("max_thread_count"),
    section("largevm", DEFAULT_PVCL_UPLOAD_LARGEVM),
];
const DEFAULT_PVCL_UPLOAD_LARGEVM: &[Node] =
    &[leaf("max_thread_count"), leaf("min_cpus"), leaf("min_ram")];
const DEFAULT_PVCL_SSL: &[Node] = &[leaf("verify"), leaf("cert_dir"), leaf("cert_file")];
const DEFAULT_PVCL_IAM: &[Node] = &[
    leaf("endpoint"),
    leaf("default_client_id"),
    leaf("default_client_secret"),
];
const DEFAULT_PVCL_STS: &[Node] = &[leaf("endpoint")];
const DEFAULT_PVCL_MULTI_SESSION: &[Node] = &[
    leaf("missing_part_max_to_wait"),
    leaf("missing_part_wait_period_sec"),
    leaf("wait_for_start"),
];
const DEFAULT_PVDR: &[Node] = &[section("write", DEFAULT_PVDR_WRITE)];
const DEFAULT_PVDR_WRITE: &[Node] = &[leaf("max_retry_count")];
const DEFAULT_ASYNC_LOCK: &[Node] = &[
    leaf("type"),
    leaf("stale_timeout_sec"),
    leaf("update_period_sec"),
];
const DEFAULT_WATCH: &[Node] = &[leaf("log_directory"), leaf("log_level")];
const DEFAULT_ASCMD: &[Node] = &[section("log_cmd", DEFAULT_ASCMD_LOG_CMD)];
const DEFAULT_ASCMD_LOG_CMD: &[Node] = &[
    leaf("as_info"),
    leaf("as_ls"),
    leaf("as_rm"),
    leaf("as_du"),
    leaf("as_mkdir"),
    leaf("as_cp"),
    leaf("as_mv"),
    leaf("as_df"),
    leaf("as_md5sum"),
];
const DEFAULT_LOGGING: &[Node] = &[
    leaf("classes"),
    leaf("level"),
    leaf("directory"),
    leaf("log_size"),
    leaf("log_count"),
    leaf("add_tid"),
];
const TRUNKS: &[Node] = &[section_list("trunk", TRUNKS_TRUNK)];
const TRUNKS_TRUNK: &[Node] = &[
    leaf("name"),
    leaf("id"),
    leaf("on"),
    leaf("ignore_direction"),
    section("capacity", TRUNKS_TRUNK_CAPACITY),
    leaf("mcast_iface_address"),
    leaf("mcast_group_address"),
    leaf("mcast_port"),
    leaf("mcast_ttl"),
    leaf("target_queue"),
    leaf("min_queue"),
    leaf("tightness_in"),
    leaf("tightness_out"),
    leaf("qb_over_qmax"),
];
const TRUNKS_TRUNK_CAPACITY: &[Node] = &[leaf("schedule")];
const CENTRAL_SERVER: &[Node] = &[
    leaf("address"),
    leaf("port"),
    leaf("backlog"),
    leaf("schema_validation"),
    leaf("raw_options"),
    leaf("mgmt_backlog"),
    leaf("mgmt_port"),
    leaf("transfer_list_path"),
    leaf("persistent_store"),
    leaf("persistent_store_path"),
    leaf("persistent_store_max_age"),
    leaf("persistent_store_on_error"),
    leaf("event_buffer_capacity"),
    leaf("event_buffer_overrun"),
    leaf("compact_on_startup"),
    leaf("files_per_session"),
    leaf("file_errors"),
    leaf("ignore_empty_files"),
    leaf("ignore_skipped_files"),
    leaf("ignore_no_transfer_files"),
    leaf("db_synchronous"),
    leaf("db_journal"),
    leaf("validation_timeout"),
];
const HTTP_SERVER: &[Node] = &[
    leaf("cert_file"),
    leaf("key_file"),
    leaf("bind_address"),
    leaf("mgmt_address"),
    leaf("restartable_transfers"),
    leaf("session_activity_timeout"),
    leaf("http_port"),
    leaf("https_port"),
    leaf("enable_http"),
    leaf("enable_https"),
    leaf("persistent_connection"),
    leaf("listen_backlog"),
];
const DATABASE: &[Node] = &[
    leaf("adapter"),
    leaf("server"),
    leaf("port"),
    leaf("user"),
    leaf("password"),
    leaf("database_name"),
    leaf("threads"),
    leaf("exit_on_database_error"),
    leaf("session_progress"),
    leaf("session_progress_interval"),
    leaf("file_events"),
    leaf("file_progress"),
    leaf("file_errors"),
    leaf("file_progress_interval"),
    leaf("files_per_session"),
    leaf("ignore_empty_files"),
    leaf("ignore_skipped_files"),
    leaf("ignore_no_transfer_files"),
    leaf("rate_events"),
    leaf("node_registration"),
    leaf("buffer_capacity"),
];
const SERVER: &[Node] = &[
    leaf("server_name"),
    leaf("sync_setup_server_name"),
    leaf("workers"),
    leaf("preview_dir"),
    leaf("transfers_multi_session_default"),
    leaf("transfer_manager_interval"),
    leaf("transfers_share_request"),
    leaf("transfer_manager_max_retries"),
    leaf("transfer_manager_max_concurrent_sessions"),
    leaf("max_running_ascp"),
    leaf("max_running_ascp_timeout"),
    leaf("listen"),
    leaf("http_port"),
    leaf("https_port"),
    leaf("enable_http"),
    leaf("enable_https"),
    leaf("read_timeout_seconds"),
    leaf("node_id"),
    leaf("cluster_id"),
    leaf("cert_file"),
    leaf("key_file"),
    leaf("chain_file"),
    leaf("log_api_activity"),
    section("job_queue", SERVER_JOB_QUEUE),
    leaf("ssh_host_key_fingerprint"),
    leaf("ssh_host_key_path"),
    leaf("ssh_port"),
    leaf("enable_dynamic_ssh_key"),
    leaf("max_response_entries"),
    leaf("max_response_time_sec"),
    leaf("max_request_file_create_size_kb"),
    leaf("db_dir"),
    leaf("db_log_dir"),
    leaf("db_cert_file"),
    leaf("db_host"),
    leaf("db_port"),
    leaf("db_type"),
    leaf("db_backup_mode"),
    leaf("db_bind_ip_address"),
    leaf("db_config_save"),
    leaf("db_connection_timeout"),
    leaf("db_load_timeout"),
    leaf("db_primaryset"),
    leaf("db_max_wait"),
    leaf("db_pool_size"),
    section("scalekv", SERVER_SCALEKV),
    leaf("activity_logging"),
    leaf("activity_event_logging"),
    leaf("activity_file_event_logging"),
    leaf("activity_retention"),
    leaf("activity_log_queue_timeout"),
    leaf("activity_bandwidth_retention"),
    leaf("activity_cleanup_interval"),
    leaf("activity_transfer_reaper_interval"),
    leaf("activity_transfer_timeout"),
    leaf("activity_files_max"),
    leaf("activity_bandwidth_logging"),
    leaf("activity_transfer_ignore_skipped_files"),
    leaf("password_enforce_min_strength"),
    leaf("password_min_length"),
    leaf("password_max_length"),
    leaf("password_min_lowercase_count"),
    leaf("password_min_uppercase_count"),
    leaf("password_min_digit_count"),
    leaf("password_min_special_count"),
    leaf("files_prefetch_count"),
    leaf("files_max_count"),
    leaf("files_cache_ttl"),
    leaf("files_cleanup_interval"),
    leaf("files_cleanup_enabled"),
    leaf("files_recursive_counts_update_interval"),
    leaf("files_recursive_counts_workers"),
    leaf("files_recursive_counts_enabled"),
    leaf("files_discovery_workers"),
    leaf("files_discovery_enabled"),
    leaf("files_discovery_update_interval"),
    leaf("files_auto_delete_enabled"),
    leaf("files_presigned_url_ttl"),
    section("license_remote", SERVER_LICENSE_REMOTE),
    leaf("key_value_parameters"),
    leaf("content_protection_allowed"),
    leaf("aej_logging"),
    leaf("aej_max_retries"),
    leaf("aej_connection_timeout_sec"),
    leaf("aej_host"),
    leaf("aej_port"),
    leaf("access_key_credentials_encryption_type"),
    leaf("access_key_db_host"),
    leaf("access_key_db_port"),
    leaf("minimum_secure_token_verification_key_length"),
    leaf("iptables_path"),
    section("proxy", SERVER_PROXY),
    section("rproxy", SERVER_RPROXY),
    section("initd", SERVER_INITD),
    section("rund", SERVER_RUND),
    section("watch", SERVER_WATCH),
    section("async", SERVER_ASYNC),
    leaf("ssl_ciphers"),
    leaf("fasp_ciphers"),
    leaf("fasp_macs"),
    leaf("wss_port"),
    leaf("wss_listen_port"),
    leaf("wss_listen_address"),
    leaf("wss_enabled"),
    leaf("wss_threads"),
    leaf("wss_allowed_proxy_addresses"),
    leaf("force_usage_enabled"),
    leaf("ssl_protocol"),
    section("vault", SERVER_VAULT),
    leaf("byok_url"),
    leaf("byok_cache_ttl_seconds"),
    leaf("byok_cache_cleanup_interval_seconds"),
    leaf("logging_class"),
    section("authentication", SERVER_AUTHENTICATION),
];
const SERVER_JOB_QUEUE: &[Node] = &[
    leaf("threads"),
    leaf("jobs_per_loop"),
    leaf("mainloop_min_ms"),
    leaf("start_delay_ms"),
    leaf("min_spawn_time_ms"),
    leaf("job_timeout_ms"),
    leaf("status_ttl_ms"),
];
const SERVER_SCALEKV: &[Node] = &[
    section("sstore", SERVER_SCALEKV_SSTORE),
    leaf("instance_type"),
    leaf("npartitions"),
    leaf("nreplicas"),
    leaf("max_mem"),
    leaf("baseport"),
    leaf("autorecovery_delay_secs"),
    section("autorebalance", SERVER_SCALEKV_AUTOREBALANCE),
    section("instance_conf", SERVER_SCALEKV_INSTANCE_CONF),
    leaf("proxy_backlog"),
    leaf("proxy_memory_chunk_size"),
    leaf("proxy_memory_limit"),
];
const SERVER_SCALEKV_SSTORE: &[Node] = &[leaf("type"), leaf("host"), leaf("port")];
const SERVER_SCALEKV_AUTOREBALANCE: &[Node] = &[leaf("delay_secs"), leaf("sync_perc")];
const SERVER_SCALEKV_INSTANCE_CONF: &[Node] =
    &[section("redis", SERVER_SCALEKV_INSTANCE_CONF_REDIS)];
const SERVER_SCALEKV_INSTANCE_CONF_REDIS: &[Node] =
    &[leaf("save"), leaf("appendonly"), leaf("appendfsync")];
const SERVER_LICENSE_REMOTE: &[Node] = &[leaf("address"), leaf("check_freq"), leaf("update_freq")];
const SERVER_PROXY: &[Node] = &[
    leaf("enabled"),
    leaf("authentication"),
    leaf("bind_ip_address"),
    leaf("bind_ip_netmask"),
    leaf("port_range_low"),
    leaf("port_range_high"),
    leaf("cleanup_interval"),
    leaf("keepalive_interval"),
    leaf("session_timeout"),
];
const SERVER_RPROXY: &[Node] = &[
    leaf("enabled"),
    leaf("log_level"),
    leaf("log_directory"),
    section("rules", SERVER_RPROXY_RULES),
];
const SERVER_RPROXY_RULES: &[Node] = &[section_list("rule", SERVER_RPROXY_RULES_RULE)];
const SERVER_RPROXY_RULES_RULE: &[Node] = &[
    leaf("host"),
    leaf("proxy_port"),
    leaf("bind_source_address"),
    leaf("squash_user"),
    leaf("keyfile"),
    leaf("udp_port_reuse"),
    leaf("forwarding_type"),
];
const SERVER_INITD: &[Node] = &[
    leaf("db_dir"),
    leaf("db_log_dir"),
    leaf("db_port"),
    leaf("log_level"),
    leaf("log_directory"),
    leaf("user"),
];
const SERVER_RUND: &[Node] = &[
    leaf("log_level"),
    leaf("log_directory"),
    leaf("db_spec"),
    section("status", SERVER_RUND_STATUS),
];
const SERVER_RUND_STATUS: &[Node] = &[leaf("update_period")];
const SERVER_WATCH: &[Node] = &[
    leaf("log_level"),
    leaf("log_directory"),
    leaf("db_spec"),
    section("watchd", SERVER_WATCH_WATCHD),
    section("watchfolderd", SERVER_WATCH_WATCHFOLDERD),
];
const SERVER_WATCH_WATCHD: &[Node] = &[
    leaf("max_directories"),
    leaf("max_snapshots"),
    leaf("snapshot_min_interval"),
    leaf("snapshot_min_changes"),
    leaf("scan_period"),
    leaf("scan_threads"),
];
const SERVER_WATCH_WATCHFOLDERD: &[Node] = &[
    leaf("remote_tmpdir_conf"),
    leaf("purge_drops_max_age"),
    leaf("purge_drops_max_files"),
    leaf("raw_options"),
];
const SERVER_ASYNC: &[Node] = &[leaf("raw_options")];
const SERVER_VAULT: &[Node] = &[
    leaf("role_id"),
    leaf("vault_url"),
    leaf("transit_path"),
    leaf("keyring_id"),
    leaf("retry_resp_codes"),
    leaf("max_http_retry"),
    leaf("default_retry_delay"),
    leaf("max_retry_delay"),
    leaf("cache_ttl_seconds"),
    leaf("cache_cleanup_interval_seconds"),
    leaf("watermark_path"),
    leaf("redis_path"),
];
const SERVER_AUTHENTICATION: &[Node] = &[section("provider", SERVER_AUTHENTICATION_PROVIDER)];
const SERVER_AUTHENTICATION_PROVIDER: &[Node] = &[leaf("type"), leaf("spec"), leaf("squash_user")];
const LOGGING: &[Node] = &[section_list("log_setting", LOGGING_LOG_SETTING)];
const LOGGING_LOG_SETTING: &[Node] = &[
    leaf("classes"),
    leaf("level"),
    leaf("directory"),
    leaf("log_size"),
    leaf("log_count"),
    leaf("add_tid"),
];
const CLIENT: &[Node] = &[
    leaf("async_management_activity_logging"),
    leaf("async_kvstore_activity_logging"),
    section("async_lock", CLIENT_ASYNC_LOCK),
    leaf("ssl_ciphers"),
    leaf("ssh_ciphers"),
    leaf("ssh_macs"),
    leaf("default_ssh_key"),
    leaf("ssh_path"),
    leaf("fasp_ciphers"),
    leaf("fasp_macs"),
    leaf("encryption_cipher"),
    leaf("ssl_protocol"),
];
const CLIENT_ASYNC_LOCK: &[Node] = &[
    leaf("type"),
    leaf("stale_timeout_sec"),
    leaf("update_period_sec"),
];

/// The warning for `<name>`, a tag of IBM's schema that fasp-proxy does not use: it is ignored.
/// [`note_inside`] adds how many tags it held, once they are read.
pub fn not_used(name: &str, pos: Pos, path: &str) -> Diagnostic {
    Diagnostic::warning(
        Some(pos),
        format!("<{name}> (IBM's aspera.conf schema) is not used by fasp-proxy: ignored"),
    )
    .at_path(path)
}

/// Completes a [`not_used`] warning with the number of tags that were inside the ignored one.
pub fn note_inside(warning: &mut Diagnostic, inside: usize) {
    match inside {
        0 => {}
        1 => warning.message.push_str(", with the tag inside it"),
        n => warning
            .message
            .push_str(&format!(", with the {n} tags inside it")),
    }
}

/// Checks `<name>` inside `parent`, an element only IBM's schema has: its schema node when IBM
/// allows it there, else the error.
pub fn check_child(
    parent: &'static Node,
    name: &str,
    pos: Pos,
    path: &str,
) -> Result<&'static Node, Diagnostic> {
    if parent.is_leaf() {
        return Err(Diagnostic::error(
            Some(pos),
            format!(
                "<{}> holds a value, not tags; found <{name}> inside",
                parent.name
            ),
        )
        .at_path(path));
    }
    if let Some(node) = parent.child(name) {
        return Ok(node);
    }
    let d = Diagnostic::error(
        Some(pos),
        format!("unknown tag <{name}> in <{}>", parent.name),
    )
    .at_path(path);
    Err(match suggestion(Some(parent), name) {
        Some(near) => d.with_hint(format!("did you mean <{near}>?")),
        None => d.with_hint(format!(
            "neither fasp-proxy nor IBM's aspera.conf schema has <{name}> in <{}>",
            parent.name
        )),
    })
}

/// The tag of IBM's schema allowed in `parent` that `name` is most likely a typo of.
pub fn suggestion(parent: Option<&'static Node>, name: &str) -> Option<&'static str> {
    let children = parent.map_or(&[][..], |p| p.children);
    suggest::closest(name, children.iter().map(|n| n.name))
}

/// Whether IBM's schema allows attribute `key` on the element `node`.
pub fn allows_attribute(node: Option<&Node>, key: &str) -> bool {
    node.is_some_and(|n| n.attributes.contains(&key))
}

/// Checks the attributes of an element against IBM's schema. `node` is the element in IBM's
/// schema, `ibm_only` whether fasp-proxy's schema lacks the element (its attributes are then
/// checked here; otherwise the caller checks those fasp-proxy knows).
pub fn check_attributes(
    node: Option<&Node>,
    ibm_only: bool,
    name: &str,
    attributes: &[(String, String)],
    pos: Pos,
    path: &str,
) -> Vec<Diagnostic> {
    let mut found = Vec::new();
    let Some(node) = node else {
        return found;
    };
    for (key, value) in attributes {
        if allows_attribute(Some(node), key) {
            if std::ptr::eq(node, &ROOT) && key == "version" && value.trim() != CONF_VERSION {
                found.push(
                    Diagnostic::warning(
                        Some(pos),
                        format!(
                            "<CONF version=\"{value}\">: IBM's schema knows only version \
                             {CONF_VERSION}, and fasp-proxy reads the file as that"
                        ),
                    )
                    .at_path(path),
                );
            }
        } else if ibm_only {
            let mut d =
                Diagnostic::error(Some(pos), format!("unknown attribute {key} on <{name}>"))
                    .at_path(path);
            d = match suggest::closest(key, node.attributes.iter().copied()) {
                Some(near) => d.with_hint(format!("did you mean {near}?")),
                None if node.attributes.is_empty() => {
                    d.with_hint(format!("<{name}> takes no attributes"))
                }
                None => d.with_hint(format!("<{name}> takes {}", node.attributes.join(", "))),
            };
            found.push(d);
        }
    }
    found
}

/// One `<forwarding_type>` the file sets: `<server><forwarding_type>` or one in a `<rule>`.
#[derive(Debug, Clone)]
pub struct ForwardingSetting {
    /// The value.
    pub value: ForwardingType,
    /// Where the tag is.
    pub pos: Option<Pos>,
    /// Its tag path.
    pub path: String,
    /// The label of the rule it is in; `None` for the server-level tag.
    pub rule: Option<String>,
}

impl ForwardingSetting {
    fn line(&self) -> u32 {
        self.pos.map_or(0, |p| p.line)
    }
}

/// The one data-plane backend of the daemon, from the server-level `<forwarding_type>` and the
/// per-rule ones IBM's files carry: the server's when it is set, and then every rule that sets
/// one must agree with it; otherwise every rule that sets one must agree with the others, and
/// that value is used. `None` when nothing sets it (the default applies). Disagreements are
/// errors naming both places.
pub fn one_forwarding_type(
    server: Option<&ForwardingSetting>,
    rules: &[ForwardingSetting],
) -> (Option<ForwardingType>, Vec<Diagnostic>) {
    let mut errors = Vec::new();
    let chosen = server.or_else(|| rules.first());
    if let Some(chosen) = chosen {
        for rule in rules {
            if rule.value == chosen.value {
                continue;
            }
            let other = match &chosen.rule {
                None => format!(
                    "<server><forwarding_type> {} (line {})",
                    chosen.value,
                    chosen.line()
                ),
                Some(label) => format!(
                    "<forwarding_type> {} of {label} (line {})",
                    chosen.value,
                    chosen.line()
                ),
            };
            let hint = if chosen.rule.is_none() {
                "the daemon has one data-plane backend for every rule: drop the rule's <forwarding_type> or make the two agree"
            } else {
                "the daemon has one data-plane backend for every rule: make the rules agree, or set it once in <server><forwarding_type>"
            };
            let mut d = Diagnostic::error(
                rule.pos,
                format!("<forwarding_type> {} disagrees with {other}", rule.value),
            )
            .at_path(rule.path.clone())
            .with_hint(hint);
            if let Some(label) = &rule.rule {
                d = d.in_rule(label.clone());
            }
            errors.push(d);
        }
    }
    (chosen.map(|c| c.value), errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{errors, parse};
    use crate::config::{Loaded, Severity};
    use std::path::Path;

    /// The `aspera.conf` IBM ships with its client (PyPI's cos-aspera wheel), as it is.
    const IBM_CLIENT_CONF: &str = r#"<?xml version='1.0' encoding='UTF-8'?>
<CONF version="2">

<default>
    <file_system>
        <storage_rc>
            <adaptive>
                true
            </adaptive>
        </storage_rc>
        <resume_suffix>.aspera-ckpt</resume_suffix>
        <partial_file_suffix>.partial</partial_file_suffix>
    </file_system>
</default>

</CONF>
"#;

    fn accepted(text: &str) -> Loaded {
        match parse(text) {
            Ok(loaded) => loaded,
            Err(e) => panic!("refused:\n{e}"),
        }
    }

    fn not_used(loaded: &Loaded) -> Vec<&Diagnostic> {
        loaded
            .warnings
            .iter()
            .filter(|d| d.message.contains("not used by fasp-proxy"))
            .collect()
    }

    /// A reverse proxy with one good rule, `server` and `rule` added inside.
    fn with(server: &str, rule: &str) -> String {
        format!(
            "<CONF version=\"2\">\n<server>\n{server}\n<rproxy>\n<enabled>true</enabled>\n<rules>\n\
             <rule><host>198.51.100.2</host><keyfile>/k</keyfile>{rule}</rule>\n\
             </rules>\n</rproxy>\n</server>\n</CONF>\n"
        )
    }

    fn walk(node: &'static Node, path: &mut Vec<&'static str>, f: &mut dyn FnMut(&[&str], &Node)) {
        path.push(node.name);
        f(path, node);
        for child in node.children {
            walk(child, path, f);
        }
        path.pop();
    }

    #[test]
    fn table_holds_every_element_of_the_schema() {
        // aspera.conf.xsd (build 4.4.7) has 646 elements: the root, and 645 below it, of which
        // <default><file_system> is defined twice and merged here; the five sets of strings
        // add their separator tag each.
        let mut count = 0;
        let mut repeated = Vec::new();
        walk(&ROOT, &mut Vec::new(), &mut |path, node| {
            count += 1;
            let mut names: Vec<_> = node.children.iter().map(|c| c.name).collect();
            names.sort_unstable();
            let before = names.len();
            names.dedup();
            assert_eq!(
                before,
                names.len(),
                "duplicate child under {}",
                path.join("/")
            );
            if node.repeated {
                repeated.push(path.join("/"));
            }
        });
        assert_eq!(count, 650);
        assert_eq!(
            repeated,
            [
                "CONF/default/file_system",
                "CONF/default/file_system/filters/filter",
                "CONF/default/file_system/access/paths/path",
                "CONF/default/file_system/access/paths/path/filter",
                "CONF/default/file_system/access/paths/path/restrictions/restriction",
                "CONF/default/pvcl/blacklist/opt",
                "CONF/default/pvcl/whitelist/opt",
                "CONF/default/aspshell_commands/command",
                "CONF/trunks/trunk",
                "CONF/server/rproxy/rules/rule",
                "CONF/logging/log_setting",
            ]
        );
        let top: Vec<_> = ROOT.children.iter().map(|n| n.name).collect();
        assert_eq!(
            top,
            [
                "default",
                "trunks",
                "central_server",
                "http_server",
                "database",
                "server",
                "logging",
                "client"
            ]
        );
        assert_eq!(ROOT.attributes, ["version"]);
        let rule = ["server", "rproxy", "rules", "rule"]
            .iter()
            .try_fold(&ROOT, |n, name| n.child(name));
        let rule = rule.map(|r| r.children.iter().map(|n| n.name).collect::<Vec<_>>());
        assert_eq!(
            rule.unwrap_or_default(),
            [
                "host",
                "proxy_port",
                "bind_source_address",
                "squash_user",
                "keyfile",
                "udp_port_reuse",
                "forwarding_type"
            ]
        );
    }

    #[test]
    fn tags_both_schemas_have_agree_on_holding_a_value() {
        // Where fasp-proxy's schema and IBM's have the same tag, both say leaf or both section,
        // so that a file valid for one has the same shape for the other.
        let mut shared = 0;
        crate::config::schema::walk(
            &crate::config::schema::ROOT,
            &mut Vec::new(),
            &mut |path, tag| {
                let node = path[1..].iter().try_fold(&ROOT, |n, name| n.child(name));
                if let Some(node) = node {
                    shared += 1;
                    assert_eq!(node.is_leaf(), tag.is_leaf(), "{}", path.join("/"));
                }
            },
        );
        // <CONF>, <server>, <rproxy> with 12 tags inside (a rule's <forwarding_type> among them),
        // <proxy> with its 9, 5 more in <server> (not <forwarding_type>: IBM has it only in rules);
        // <default> with 10 inside (the docroot's 8, <aspshell_commands><command>); <aaa> with 13
        // inside (<realms><realm><users><user>, its <name> and the docroot's 8).
        assert_eq!(shared, 55);
    }

    #[test]
    fn the_file_ibm_ships_with_its_client_checks_clean() {
        assert_eq!(IBM_CLIENT_CONF.lines().count(), 16);
        let loaded = accepted(IBM_CLIENT_CONF);
        let ignored = not_used(&loaded);
        assert_eq!(ignored.len(), 1, "{:#?}", loaded.warnings);
        let w = ignored[0];
        assert_eq!(w.severity, Severity::Warning);
        assert_eq!(w.tag_path.as_deref(), Some("CONF/default"));
        assert_eq!(w.pos.map(|p| p.line), Some(4));
        assert_eq!(
            w.message,
            "<default> (IBM's aspera.conf schema) is not used by fasp-proxy: ignored, with the 5 \
             tags inside it"
        );
        assert_eq!(
            w.display_in(Path::new("aspera.conf")).to_string(),
            "aspera.conf:4:1: warning: <default> (IBM's aspera.conf schema) is not used by \
             fasp-proxy: ignored, with the 5 tags inside it [at CONF/default]"
        );
        // Nothing else in the file: the only other warning is that no proxy mode is on.
        assert_eq!(loaded.warnings.len(), 2, "{:#?}", loaded.warnings);
        assert!(!loaded.config.server.rproxy.enabled);
    }

    #[test]
    fn an_ibm_only_tag_gets_exactly_one_warning_with_its_path() {
        let loaded = accepted(&with("<server_name>proxy.example.com</server_name>", ""));
        assert_eq!(loaded.warnings.len(), 1, "{:#?}", loaded.warnings);
        let w = &loaded.warnings[0];
        assert_eq!(w.tag_path.as_deref(), Some("CONF/server/server_name"));
        assert_eq!(w.pos.map(|p| p.line), Some(3));
        assert!(
            w.message.starts_with(
                "<server_name> (IBM's aspera.conf schema) is not used by fasp-proxy: ignored"
            ),
            "{w:?}"
        );
        assert!(!w.message.contains("inside"), "{w:?}");

        // One each, however many; the tags inside an ignored one are not warned about again.
        let loaded = accepted(&with(
            "<server_name>a</server_name><workers>4</workers><job_queue><threads>2</threads></job_queue>",
            "",
        ));
        let paths: Vec<_> = not_used(&loaded)
            .iter()
            .filter_map(|d| d.tag_path.clone())
            .collect();
        assert_eq!(
            paths,
            [
                "CONF/server/server_name",
                "CONF/server/workers",
                "CONF/server/job_queue"
            ]
        );
        // Repeated sections of IBM's schema, their values unchecked.
        let loaded = accepted(
            "<CONF><logging><log_setting><level>dbg9?</level></log_setting>\
             <log_setting><classes>x</classes></log_setting></logging><server/></CONF>",
        );
        let ignored = not_used(&loaded);
        assert_eq!(ignored.len(), 1, "{ignored:?}");
        assert!(ignored[0].message.ends_with("with the 4 tags inside it"));
    }

    #[test]
    fn typos_of_ibm_tags_are_errors_that_suggest_the_ibm_tag() {
        let e = errors(&with("<server_nme>a</server_nme>", ""));
        assert_eq!(e.len(), 1, "{e:#?}");
        assert_eq!(
            e[0],
            "3 |  | unknown tag <server_nme> in <server> | did you mean <server_name>? (a tag of \
             IBM's aspera.conf schema, not used by fasp-proxy)"
        );
        let e = errors("<CONF version=\"2\">\n<defualt/>\n</CONF>");
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(
            e[0].starts_with("2 |  | unknown tag <defualt> in <CONF> | did you mean <default>?"),
            "{e:?}"
        );
        // Inside a tag only IBM has, IBM's schema says what may be there.
        let text = IBM_CLIENT_CONF
            .replace("<adaptive>", "<adaptve>")
            .replace("</adaptive>", "</adaptve>");
        let e = errors(&text);
        assert_eq!(
            e,
            ["7 |  | unknown tag <adaptve> in <storage_rc> | did you mean <adaptive>?"]
        );
        let e = errors("<CONF><default><file_system><resume_suffix><x/></resume_suffix></file_system></default></CONF>");
        assert!(
            e[0].contains("<resume_suffix> holds a value, not tags"),
            "{e:?}"
        );
        // A fasp-proxy tag still gets the fasp-proxy suggestion.
        let e = errors(&with("", "<keyfle>/k</keyfle>"));
        assert!(e[0].ends_with("did you mean <keyfile>?"), "{e:?}");
    }

    #[test]
    fn tags_in_neither_schema_stay_errors() {
        let e = errors("<CONF><bogus/></CONF>");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("unknown tag <bogus> in <CONF>") && e[0].contains("allows <server>"),
            "{e:?}"
        );
        let e = errors("<CONF><default><bogus_setting>1</bogus_setting></default></CONF>");
        assert_eq!(
            e,
            ["1 |  | unknown tag <bogus_setting> in <default> | neither fasp-proxy nor IBM's aspera.conf schema has <bogus_setting> in <default>"]
        );
        // An IBM tag in the wrong place is unknown there.
        let e = errors(&with("", "<server_name>x</server_name>"));
        assert!(
            e[0].contains("unknown tag <server_name> in <rule>"),
            "{e:?}"
        );
    }

    #[test]
    fn conf_version_attribute() {
        let loaded = accepted("<CONF version=\"2\"><server/></CONF>");
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        let loaded = accepted("<CONF version=\"3\"><server/></CONF>");
        assert!(
            loaded
                .warnings
                .iter()
                .any(|w| w.message.contains("version=\"3\"")),
            "{:?}",
            loaded.warnings
        );
        let e = errors("<CONF versoin=\"2\"/>");
        assert_eq!(
            e,
            ["1 |  | unknown attribute versoin on <CONF> | did you mean version?"]
        );
        let e = errors("<CONF><default name=\"x\"/></CONF>");
        assert_eq!(
            e,
            ["1 |  | unknown attribute name on <default> | <default> takes no attributes"]
        );
    }

    #[test]
    fn forwarding_type_in_rules_only_is_used() {
        let loaded = accepted(&with("", "<forwarding_type>iptables</forwarding_type>"));
        assert_eq!(
            loaded.config.server.forwarding_type,
            ForwardingType::Iptables
        );
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        // Nothing sets it: the default.
        let loaded = accepted(&with("", "<forwarding_type></forwarding_type>"));
        assert_eq!(
            loaded.config.server.forwarding_type,
            ForwardingType::Nftables
        );
    }

    #[test]
    fn forwarding_type_of_a_rule_must_agree_with_the_server() {
        let agree = with(
            "<forwarding_type>nftables</forwarding_type>",
            "<forwarding_type>nftables</forwarding_type>",
        );
        assert_eq!(
            accepted(&agree).config.server.forwarding_type,
            ForwardingType::Nftables
        );
        let text = with(
            "<forwarding_type>nftables</forwarding_type>",
            "\n<forwarding_type>iptables</forwarding_type>",
        );
        let e = errors(&text);
        assert_eq!(
            e,
            [
                "8 | rule 1 (default rule) | <forwarding_type> iptables disagrees with \
              <server><forwarding_type> nftables (line 3) | the daemon has one data-plane backend \
              for every rule: drop the rule's <forwarding_type> or make the two agree"
            ]
        );
        let err = parse(&text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("test.conf:8:1: error: rule 1 (default rule): <forwarding_type> iptables disagrees with <server><forwarding_type> nftables (line 3) [at CONF/server/rproxy/rules/rule[1]/forwarding_type]"),
            "{err}"
        );
    }

    #[test]
    fn forwarding_types_of_rules_must_agree_with_each_other() {
        let text = "<CONF version=\"2\"><server><rproxy><enabled>true</enabled><rules>\n\
            <rule host_ip=\"192.0.2.1\"><host>198.51.100.2</host><keyfile>/k</keyfile><forwarding_type>iptables</forwarding_type></rule>\n\
            <rule host_ip=\"192.0.2.2\"><host>198.51.100.3</host><keyfile>/k</keyfile></rule>\n\
            <rule host_ip=\"192.0.2.3\"><host>198.51.100.4</host><keyfile>/k</keyfile><forwarding_type>nftables</forwarding_type></rule>\n\
            </rules></rproxy></server></CONF>";
        let e = errors(text);
        assert_eq!(
            e,
            [
                "4 | rule 3 (host_ip=\"192.0.2.3\") | <forwarding_type> nftables disagrees with \
              <forwarding_type> iptables of rule 1 (host_ip=\"192.0.2.1\") (line 2) | the daemon \
              has one data-plane backend for every rule: make the rules agree, or set it once in \
              <server><forwarding_type>"
            ]
        );
        let agree = text.replace(">nftables<", ">iptables<");
        assert_eq!(
            accepted(&agree).config.server.forwarding_type,
            ForwardingType::Iptables
        );
    }

    #[test]
    fn forwarding_type_in_a_rule_is_checked_like_the_servers() {
        let e = errors(&with("", "<forwarding_type>iptable</forwarding_type>"));
        assert_eq!(
            e,
            [
                "7 | rule 1 (default rule) | <forwarding_type>: \"iptable\" is not nftables or \
              iptables; did you mean iptables? | "
            ]
        );
        // A bad server value is reported once, not again against every rule.
        let e = errors(&with(
            "<forwarding_type>ipfw</forwarding_type>",
            "<forwarding_type>iptables</forwarding_type>",
        ));
        assert_eq!(e.len(), 1, "{e:?}");
    }

    #[test]
    fn the_product_guide_examples_check_clean() {
        let loaded = accepted(include_str!(
            "../../tests/fixtures/ibm/guide_reverse_proxy.conf"
        ));
        assert_eq!(loaded.config.server.rproxy.rules.len(), 2);
        assert_eq!(
            loaded.config.server.forwarding_type,
            ForwardingType::Iptables
        );
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);

        let loaded = accepted(include_str!(
            "../../tests/fixtures/ibm/guide_load_balancing.conf"
        ));
        let rule = &loaded.config.server.rproxy.rules[0];
        assert_eq!(rule.hosts.len(), 3);
        assert!(!rule.src_port_filtering);
        assert_eq!(
            loaded.config.server.forwarding_type,
            ForwardingType::Iptables
        );
        let paths: Vec<_> = not_used(&loaded)
            .iter()
            .filter_map(|d| d.tag_path.clone())
            .collect();
        assert_eq!(paths, ["CONF/server/server_name", "CONF/default"]);
        assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
    }
}
