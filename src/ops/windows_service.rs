//! pinproxy as a Windows service: `pinproxy service install|uninstall|start|stop`
//! talk to the service control manager (SCM); `pinproxy service run`, the
//! command line the SCM starts, serves the config as `pinproxy run` does. The
//! SCM's Stop and Shutdown controls drain and stop like SIGTERM; `pinproxy
//! service reload` (control 128) or ParamChange (`sc control pinproxy
//! paramchange`) reloads the config like SIGHUP; the
//! service reports Running once every listener is bound. The service runs as
//! `NT AUTHORITY\LocalService`, which has no rights beyond a user's.

use std::ffi::OsString;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use windows_service::service::{
    ServiceAccess, ServiceControl, ServiceControlAccept, ServiceErrorControl, ServiceExitCode,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType, UserEventCode,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

use crate::ops::service::{self, Source};

/// The account the service runs as: a built-in one without a password and with
/// no more rights than a user (it can read %ProgramData%, open sockets and make
/// outbound connections).
pub const ACCOUNT: &str = r"NT AUTHORITY\LocalService";

/// The service-defined control code (128 to 255) `service reload` sends; the
/// crate can send only those, and ParamChange comes from `sc control`.
const RELOAD: u32 = 128;

/// How long `start` and `stop` wait for the service to get there.
const WAIT: Duration = Duration::from_secs(30);

/// What `service run` serves, handed to the SCM's thread.
static JOB: Mutex<Option<(String, Source)>> = Mutex::new(None);

/// Registers the service `name`, which the SCM starts as
/// `pinproxy.exe service run --name NAME --config CONFIG --log-file LOG`.
pub fn install(name: &str, config: &Path, log_file: &Path) -> Result<String, String> {
    let executable =
        std::env::current_exe().map_err(|e| format!("cannot tell where pinproxy.exe is: {e}"))?;
    let manager = manager(ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE)?;
    let info = ServiceInfo {
        name: name.into(),
        display_name: OsString::from(format!("pinproxy ({name})")),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: executable,
        launch_arguments: vec![
            "service".into(),
            "run".into(),
            "--name".into(),
            name.into(),
            "--config".into(),
            config.into(),
            "--log-file".into(),
            log_file.into(),
        ],
        dependencies: vec![],
        account_name: Some(ACCOUNT.into()),
        account_password: None,
    };
    let created = manager
        .create_service(&info, ServiceAccess::CHANGE_CONFIG)
        .map_err(|e| scm_error(&format!("cannot create the service {name:?}"), e))?;
    let _ = created.set_description(
        "Forwards loopback HTTP to an HTTPS server verified by its certificate fingerprint (pin)",
    );
    Ok(format!(
        "installed the service {name:?} (automatic start, account {ACCOUNT}): config {}, log {}.\nStart it: \
         pinproxy service start{flag}\nReload after editing the config: pinproxy service reload{flag}",
        config.display(),
        log_file.display(),
        flag = name_flag(name)
    ))
}

/// Stops (if running) and removes the service `name`.
pub fn uninstall(name: &str) -> Result<String, String> {
    let service = open(
        name,
        ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
    )?;
    let state = service.query_status().map(|s| s.current_state);
    if !matches!(state, Ok(ServiceState::Stopped)) {
        let _ = service.stop();
        wait_for(
            || service.query_status().map(|s| s.current_state),
            ServiceState::Stopped,
        )?;
    }
    service
        .delete()
        .map_err(|e| scm_error(&format!("cannot remove the service {name:?}"), e))?;
    Ok(format!(
        "removed the service {name:?} (its config and log stay where they are)"
    ))
}

/// Starts the service `name` and waits until it reports Running.
pub fn start(name: &str) -> Result<String, String> {
    let service = open(name, ServiceAccess::QUERY_STATUS | ServiceAccess::START)?;
    service
        .start::<&str>(&[])
        .map_err(|e| scm_error(&format!("cannot start the service {name:?}"), e))?;
    wait_for(
        || service.query_status().map(|s| s.current_state),
        ServiceState::Running,
    )
    .map_err(|e| format!("{e}; its log says why"))?;
    Ok(format!("the service {name:?} is running"))
}

/// Stops the service `name` and waits until it has.
pub fn stop(name: &str) -> Result<String, String> {
    let service = open(name, ServiceAccess::QUERY_STATUS | ServiceAccess::STOP)?;
    service
        .stop()
        .map_err(|e| scm_error(&format!("cannot stop the service {name:?}"), e))?;
    wait_for(
        || service.query_status().map(|s| s.current_state),
        ServiceState::Stopped,
    )?;
    Ok(format!("the service {name:?} has stopped"))
}

/// Asks the running service `name` to reload its config.
pub fn reload(name: &str) -> Result<String, String> {
    let service = open(name, ServiceAccess::USER_DEFINED_CONTROL)?;
    let code = UserEventCode::from_raw(RELOAD).map_err(|e| e.to_string())?;
    service
        .notify(code)
        .map_err(|e| scm_error(&format!("cannot ask the service {name:?} to reload"), e))?;
    Ok(format!(
        "asked the service {name:?} to reload its config; its log says whether the new one was taken"
    ))
}

/// Hands this thread to the SCM, which calls back to serve `source` as the
/// service `name` and returns when the service has stopped.
pub fn run(name: &str, source: Source) -> Result<(), String> {
    *JOB.lock().unwrap_or_else(|p| p.into_inner()) = Some((name.to_string(), source));
    entry::dispatch(name).map_err(|e| {
        format!(
            "cannot connect to the service control manager ({e}): `pinproxy service run` is what the SCM starts; \
             in a console, use `pinproxy run`"
        )
    })
}

#[allow(unsafe_code)] // the macro's FFI entry point; no unsafe code of ours
mod entry {
    windows_service::define_windows_service!(ffi_service_main, service_main);

    pub(super) fn dispatch(name: &str) -> windows_service::Result<()> {
        windows_service::service_dispatcher::start(name, ffi_service_main)
    }

    fn service_main(_arguments: Vec<std::ffi::OsString>) {
        super::service_main();
    }
}

fn service_main() {
    let Some((name, source)) = JOB.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return;
    };
    let stop = Arc::new(tokio::sync::Notify::new());
    let handler = {
        let stop = stop.clone();
        move |control| match control {
            ServiceControl::Stop | ServiceControl::Shutdown => {
                stop.notify_one();
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::ParamChange => {
                crate::ops::reload::request();
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::UserEvent(code) if code.to_raw() == RELOAD => {
                crate::ops::reload::request();
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        }
    };
    let status = match service_control_handler::register(&name, handler) {
        Ok(status) => status,
        Err(e) => {
            tracing::error!(error = %e, "cannot register with the service control manager");
            return;
        }
    };
    let report = move |state: ServiceState, exit: u32| {
        let accepted = match state {
            ServiceState::Running => {
                ServiceControlAccept::STOP
                    | ServiceControlAccept::SHUTDOWN
                    | ServiceControlAccept::PARAM_CHANGE
            }
            _ => ServiceControlAccept::empty(),
        };
        let pending = matches!(
            state,
            ServiceState::StartPending | ServiceState::StopPending
        );
        let _ = status.set_service_status(ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: accepted,
            exit_code: if exit == 0 {
                ServiceExitCode::Win32(0)
            } else {
                ServiceExitCode::ServiceSpecific(exit)
            },
            checkpoint: 0,
            wait_hint: if pending { WAIT } else { Duration::ZERO },
            process_id: None,
        });
    };
    report(ServiceState::StartPending, 0);
    crate::ops::systemd::on_ready(move || report(ServiceState::Running, 0));
    let result = match tokio::runtime::Runtime::new() {
        Ok(runtime) => {
            let stopped = async move {
                stop.notified().await;
                tracing::info!(signal = "service stop", "shutting down: no new connections");
            };
            let result = runtime.block_on(service::run(source, stopped));
            runtime.shutdown_timeout(Duration::from_millis(100));
            result
        }
        Err(e) => Err(format!("cannot start the async runtime: {e}")),
    };
    if let Err(e) = &result {
        tracing::error!(fatal = true, "{e}");
    }
    report(ServiceState::Stopped, u32::from(result.is_err()));
}

/// The installed service `name`, opened for `access`.
fn open(name: &str, access: ServiceAccess) -> Result<windows_service::service::Service, String> {
    manager(ServiceManagerAccess::CONNECT)?
        .open_service(name, access)
        .map_err(|e| scm_error(&format!("cannot open the service {name:?}"), e))
}

fn manager(access: ServiceManagerAccess) -> Result<ServiceManager, String> {
    ServiceManager::local_computer(None::<&str>, access)
        .map_err(|e| scm_error("cannot open the service control manager", e))
}

/// The SCM's refusals, with what to do about the common one.
fn scm_error(what: &str, e: windows_service::Error) -> String {
    let denied = matches!(&e, windows_service::Error::Winapi(io) if io.raw_os_error() == Some(5));
    if denied {
        format!("{what}: access denied; run it from an elevated prompt (Run as administrator)")
    } else {
        format!("{what}: {e}")
    }
}

fn wait_for(
    state: impl Fn() -> windows_service::Result<ServiceState>,
    want: ServiceState,
) -> Result<(), String> {
    let started = Instant::now();
    loop {
        match state() {
            Ok(now) if now == want => return Ok(()),
            Ok(ServiceState::Stopped) if want == ServiceState::Running => {
                return Err("the service stopped while starting".into())
            }
            Ok(now) if started.elapsed() > WAIT => {
                return Err(format!("the service is still {now:?} after {WAIT:?}"))
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => return Err(scm_error("cannot ask the service's state", e)),
        }
    }
}

fn name_flag(name: &str) -> String {
    if name == "pinproxy" {
        String::new()
    } else {
        format!(" --name {name}")
    }
}
