//! Password checks through PAM, for `<password_authentication>`: `pam_start(<pam_service>)`,
//! `pam_authenticate` and `pam_acct_mgmt` with a conversation that answers the password prompt.
//!
//! libpam is loaded at run time (`dlopen("libpam.so.0")`, which every Linux distribution ships)
//! instead of being linked: the maintained Rust bindings (pam-sys 1.x, used by pam-client) run
//! bindgen at build time, which needs libclang and the PAM headers on every build machine, for a
//! feature that is off by default. Only the six calls below are used; their signatures and
//! constants are those of Linux-PAM's `<security/_pam_types.h>` / `<security/pam_appl.h>`.
//!
//! Every call blocks (PAM modules read files, ask directories, sleep after a failure): run
//! [`check_password`] on a blocking thread.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;

const PAM_SUCCESS: c_int = 0;
const PAM_BUF_ERR: c_int = 5;
const PAM_CONV_ERR: c_int = 19;
const PAM_NEW_AUTHTOK_REQD: c_int = 12;
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_PROMPT_ECHO_ON: c_int = 2;
const PAM_RHOST: c_int = 4;
const PAM_SILENT: c_int = 0x8000;
const PAM_DISALLOW_NULL_AUTHTOK: c_int = 0x0001;

/// The library file loaded.
pub const LIBRARY: &str = "libpam.so.0";

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type ConvFn = unsafe extern "C" fn(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int;

#[repr(C)]
struct PamConv {
    conv: Option<ConvFn>,
    appdata_ptr: *mut c_void,
}

type StartFn = unsafe extern "C" fn(
    service: *const c_char,
    user: *const c_char,
    conv: *const PamConv,
    pamh: *mut *mut c_void,
) -> c_int;
type SetItemFn =
    unsafe extern "C" fn(pamh: *mut c_void, item: c_int, value: *const c_void) -> c_int;
type FlagsFn = unsafe extern "C" fn(pamh: *mut c_void, flags: c_int) -> c_int;
type EndFn = unsafe extern "C" fn(pamh: *mut c_void, status: c_int) -> c_int;
type StrerrorFn = unsafe extern "C" fn(pamh: *mut c_void, errnum: c_int) -> *const c_char;

/// The libpam entry points, resolved once.
struct Library {
    start: StartFn,
    set_item: SetItemFn,
    authenticate: FlagsFn,
    acct_mgmt: FlagsFn,
    end: EndFn,
    strerror: StrerrorFn,
}

fn library() -> Result<&'static Library, String> {
    static LOADED: OnceLock<Result<Library, String>> = OnceLock::new();
    LOADED.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn load() -> Result<Library, String> {
    let name = CString::new(LIBRARY).map_err(|e| e.to_string())?;
    // SAFETY: dlopen with a valid C string; the handle is never closed (the library stays
    // loaded for the life of the process, so the function pointers below stay valid).
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(format!(
            "cannot load {LIBRARY} ({}); install the PAM library (Debian: libpam0g)",
            dl_error()
        ));
    }
    let symbol = |name: &str| -> Result<*mut c_void, String> {
        let c_name = CString::new(name).map_err(|e| e.to_string())?;
        // SAFETY: a valid handle from dlopen and a valid C string.
        let ptr = unsafe { libc::dlsym(handle, c_name.as_ptr()) };
        if ptr.is_null() {
            Err(format!("{LIBRARY} has no {name} ({})", dl_error()))
        } else {
            Ok(ptr)
        }
    };
    // SAFETY: each symbol is the Linux-PAM function of that name, whose C signature the
    // matching type above reproduces.
    unsafe {
        Ok(Library {
            start: std::mem::transmute::<*mut c_void, StartFn>(symbol("pam_start")?),
            set_item: std::mem::transmute::<*mut c_void, SetItemFn>(symbol("pam_set_item")?),
            authenticate: std::mem::transmute::<*mut c_void, FlagsFn>(symbol("pam_authenticate")?),
            acct_mgmt: std::mem::transmute::<*mut c_void, FlagsFn>(symbol("pam_acct_mgmt")?),
            end: std::mem::transmute::<*mut c_void, EndFn>(symbol("pam_end")?),
            strerror: std::mem::transmute::<*mut c_void, StrerrorFn>(symbol("pam_strerror")?),
        })
    }
}

fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a valid C string owned by libc.
    let err = unsafe { libc::dlerror() };
    if err.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: non-null C string from dlerror.
        unsafe { CStr::from_ptr(err) }
            .to_string_lossy()
            .into_owned()
    }
}

/// Whether password checks can work on this machine: libpam loads. The daemon asks this at
/// start when `<password_authentication>` is on, and refuses to start otherwise.
pub fn available() -> Result<(), String> {
    library().map(|_| ())
}

/// Why PAM refused a login.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{stage}: {message}")]
pub struct PamError {
    /// Which step refused: "PAM unavailable", "pam_start", "authentication", "account".
    pub stage: &'static str,
    /// PAM's own text for the result (`pam_strerror`), or why PAM could not be asked.
    pub message: String,
}

/// What the conversation answers with.
struct Answers {
    user: CString,
    password: CString,
}

/// The conversation function: the password for hidden prompts, the user name for visible ones
/// (a module asking "login:"), nothing for informational messages. The response array and its
/// strings are allocated with malloc because PAM frees them.
unsafe extern "C" fn converse(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    let Ok(count) = usize::try_from(num_msg) else {
        return PAM_CONV_ERR;
    };
    if count == 0 || msg.is_null() || resp.is_null() || appdata.is_null() {
        return PAM_CONV_ERR;
    }
    // SAFETY (whole body): PAM passes `num_msg` valid message pointers (Linux-PAM layout: an
    // array of pointers), a place for the response array, and our `Answers` as appdata.
    let answers = &*(appdata as *const Answers);
    let replies = libc::calloc(count, std::mem::size_of::<PamResponse>()) as *mut PamResponse;
    if replies.is_null() {
        return PAM_BUF_ERR;
    }
    for i in 0..count {
        let message = *msg.add(i);
        if message.is_null() {
            free_replies(replies, i);
            return PAM_CONV_ERR;
        }
        let text = match (*message).msg_style {
            PAM_PROMPT_ECHO_OFF => Some(answers.password.as_ptr()),
            PAM_PROMPT_ECHO_ON => Some(answers.user.as_ptr()),
            _ => None,
        };
        if let Some(text) = text {
            let copy = libc::strdup(text);
            if copy.is_null() {
                free_replies(replies, i);
                return PAM_BUF_ERR;
            }
            (*replies.add(i)).resp = copy;
        }
    }
    *resp = replies;
    PAM_SUCCESS
}

/// Frees the first `filled` response strings (clearing them first) and the array.
unsafe fn free_replies(replies: *mut PamResponse, filled: usize) {
    for i in 0..filled {
        let r = (*replies.add(i)).resp;
        if !r.is_null() {
            libc::memset(r as *mut c_void, 0, libc::strlen(r));
            libc::free(r as *mut c_void);
        }
    }
    libc::free(replies as *mut c_void);
}

/// Checks `user`'s `password` with PAM service `service` (`auth` then `account` stacks), with
/// the client's address as `PAM_RHOST` (for logs, pam_access, faillock). Blocks.
pub fn check_password(
    service: &str,
    user: &str,
    password: &str,
    client: &str,
) -> Result<(), PamError> {
    let lib = library().map_err(|message| PamError {
        stage: "PAM unavailable",
        message,
    })?;
    let refuse = |stage, message: &str| PamError {
        stage,
        message: message.to_string(),
    };
    let service = CString::new(service).map_err(|_| refuse("pam_start", "NUL in service"))?;
    let rhost = CString::new(client).map_err(|_| refuse("pam_start", "NUL in address"))?;
    let answers = Answers {
        user: CString::new(user).map_err(|_| refuse("authentication", "NUL in user name"))?,
        password: CString::new(password)
            .map_err(|_| refuse("authentication", "NUL in password"))?,
    };
    let conv = PamConv {
        conv: Some(converse),
        appdata_ptr: &answers as *const Answers as *mut c_void,
    };
    let mut handle: *mut c_void = std::ptr::null_mut();
    // SAFETY: valid C strings and conversation, which outlive the transaction (pam_end is
    // called below, before they are dropped).
    let rc = unsafe { (lib.start)(service.as_ptr(), answers.user.as_ptr(), &conv, &mut handle) };
    if rc != PAM_SUCCESS || handle.is_null() {
        return Err(PamError {
            stage: "pam_start",
            message: strerror(lib, handle, rc),
        });
    }
    let flags = PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK;
    // SAFETY: a live handle from pam_start; PAM copies the item.
    let mut rc = unsafe { (lib.set_item)(handle, PAM_RHOST, rhost.as_ptr() as *const c_void) };
    let mut stage = "pam_set_item";
    if rc == PAM_SUCCESS {
        stage = "authentication";
        // SAFETY: a live handle.
        rc = unsafe { (lib.authenticate)(handle, flags) };
    }
    if rc == PAM_SUCCESS {
        stage = "account";
        // SAFETY: a live handle.
        rc = unsafe { (lib.acct_mgmt)(handle, flags) };
    }
    let result = match rc {
        PAM_SUCCESS => Ok(()),
        PAM_NEW_AUTHTOK_REQD => Err(PamError {
            stage,
            message: "the password has expired and must be changed first".into(),
        }),
        _ => Err(PamError {
            stage,
            message: strerror(lib, handle, rc),
        }),
    };
    // SAFETY: a live handle, ended exactly once.
    unsafe { (lib.end)(handle, rc) };
    clear(answers.password);
    result
}

fn strerror(lib: &Library, handle: *mut c_void, rc: c_int) -> String {
    // SAFETY: pam_strerror accepts any handle (it is unused by Linux-PAM) and returns a static
    // string or NULL.
    let text = unsafe { (lib.strerror)(handle, rc) };
    if text.is_null() {
        format!("PAM error {rc}")
    } else {
        // SAFETY: non-null static C string.
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    }
}

/// Overwrites our copy of the password before freeing it.
fn clear(secret: CString) {
    let mut bytes = secret.into_bytes();
    for b in bytes.iter_mut() {
        // SAFETY: a valid, aligned pointer into our own buffer.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpam_loads_here() {
        available().expect("libpam.so.0 (Debian: libpam0g) is on every supported machine");
    }

    #[test]
    fn an_unknown_user_is_refused_with_pam_s_reason() {
        // The "other" service of a name no file has; pam_unix (or pam_deny) refuses a user that
        // does not exist either way.
        let err = check_password(
            "fasp-proxy-unit-test-no-such-service",
            "no-such-user-fasp",
            "whatever",
            "192.0.2.2",
        )
        .expect_err("an unknown user cannot log in");
        assert!(
            err.stage == "authentication" || err.stage == "account",
            "{err}"
        );
        assert!(!err.message.is_empty());
    }

    #[test]
    fn nul_bytes_are_refused_before_pam_is_asked() {
        let err = check_password("fasp-proxy", "a\0b", "pw", "192.0.2.2").unwrap_err();
        assert_eq!(err.message, "NUL in user name");
    }
}
