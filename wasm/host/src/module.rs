//! A compiled agent module, checked against the ABI and pre-linked once: every agent of
//! the module instantiates from the same [`InstancePre`], which is the cheapest way to
//! make an instance that wasmtime offers.

use std::path::Path;
use std::sync::Arc;

use wasmtime::{ExternType, FuncType, InstancePre, Module, ValType};

use crate::abi::{self, Signature};
use crate::agent::AgentData;
use crate::cache::CacheOutcome;
use crate::error::WasmError;
use crate::host::Host;

/// A module ready to instantiate agents from. Shared (`Arc`) by every agent running it,
/// on any shard.
pub struct AgentModule {
    name: String,
    module: Module,
    pre: InstancePre<AgentData>,
    has_on_stop: bool,
    cache: CacheOutcome,
}

impl std::fmt::Debug for AgentModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentModule")
            .field("name", &self.name)
            .field("has_on_stop", &self.has_on_stop)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl AgentModule {
    /// Compiles (or maps from the cache) the module in `bytes`: a binary module or, for
    /// tests and fixtures, WebAssembly text. `name` appears in errors and logs.
    pub fn from_bytes(
        host: &Host,
        name: &str,
        bytes: &[u8],
    ) -> Result<Arc<AgentModule>, WasmError> {
        let compile = || {
            Module::new(host.engine(), bytes).map_err(|error| WasmError::Invalid {
                module: name.to_owned(),
                reason: format!("{error:#}"),
            })
        };
        let (module, cache) = match host.cache() {
            Some(cache) => cache.load(host.engine(), bytes, compile)?,
            None => (compile()?, CacheOutcome::Compiled),
        };
        let has_on_stop = check_abi(name, &module)?;
        let pre =
            host.linker()
                .instantiate_pre(&module)
                .map_err(|error| WasmError::Instantiate {
                    module: name.to_owned(),
                    reason: format!("{error:#}"),
                })?;
        Ok(Arc::new(AgentModule {
            name: name.to_owned(),
            module,
            pre,
            has_on_stop,
            cache,
        }))
    }

    /// Reads and compiles the module file at `path`.
    pub fn from_file(host: &Host, path: &Path) -> Result<Arc<AgentModule>, WasmError> {
        let bytes = std::fs::read(path).map_err(|source| WasmError::Read {
            path: path.to_owned(),
            source,
        })?;
        let name = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        AgentModule::from_bytes(host, &name, &bytes)
    }

    /// The module's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the compiled code came from the cache.
    pub fn cache_outcome(&self) -> CacheOutcome {
        self.cache
    }

    /// The wasmtime module.
    pub fn module(&self) -> &Module {
        &self.module
    }

    pub(crate) fn pre(&self) -> &InstancePre<AgentData> {
        &self.pre
    }

    pub(crate) fn has_on_stop(&self) -> bool {
        self.has_on_stop
    }
}

fn describe(signature: Signature) -> String {
    let list = |types: &[ValType]| {
        types
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("func ({}) -> ({})", list(signature.0), list(signature.1))
}

fn describe_type(ty: &FuncType) -> String {
    let params: Vec<ValType> = ty.params().collect();
    let results: Vec<ValType> = ty.results().collect();
    let list = |types: &[ValType]| {
        types
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("func ({}) -> ({})", list(&params), list(&results))
}

fn matches(ty: &FuncType, signature: Signature) -> bool {
    ty.params().len() == signature.0.len()
        && ty.results().len() == signature.1.len()
        && ty
            .params()
            .zip(signature.0)
            .all(|(a, b)| ValType::eq(&a, b))
        && ty
            .results()
            .zip(signature.1)
            .all(|(a, b)| ValType::eq(&a, b))
}

fn extern_kind(ty: &ExternType) -> String {
    match ty {
        ExternType::Func(func) => describe_type(func),
        ExternType::Global(_) => "a global".into(),
        ExternType::Table(_) => "a table".into(),
        ExternType::Memory(_) => "a memory".into(),
        ExternType::Tag(_) => "a tag".into(),
    }
}

/// Checks imports and exports against ABI v1; returns whether `dp_on_stop` is exported.
fn check_abi(name: &str, module: &Module) -> Result<bool, WasmError> {
    for import in module.imports() {
        let known = (import.module() == abi::IMPORT_MODULE)
            .then(|| {
                abi::HOST_FUNCTIONS
                    .iter()
                    .find(|(function, _)| *function == import.name())
            })
            .flatten();
        let Some((_, signature)) = known else {
            return Err(WasmError::UnknownImport {
                module: name.to_owned(),
                import_module: import.module().to_owned(),
                name: import.name().to_owned(),
            });
        };
        let ok = matches!(import.ty(), ExternType::Func(ref func) if matches(func, *signature));
        if !ok {
            return Err(WasmError::WrongImport {
                module: name.to_owned(),
                name: import.name().to_owned(),
                expected: describe(*signature),
                found: extern_kind(&import.ty()),
            });
        }
    }
    match module.get_export(abi::EXPORT_MEMORY) {
        Some(ExternType::Memory(memory)) if !memory.is_64() && !memory.is_shared() => {}
        Some(other) => {
            return Err(WasmError::WrongExport {
                module: name.to_owned(),
                export: abi::EXPORT_MEMORY,
                expected: "a 32-bit unshared memory".into(),
                found: extern_kind(&other),
            })
        }
        None => {
            return Err(WasmError::MissingExport {
                module: name.to_owned(),
                export: abi::EXPORT_MEMORY,
                expected: "memory".into(),
            })
        }
    }
    for (export, signature) in abi::REQUIRED_EXPORTS {
        check_function(name, module, export, signature, true)?;
    }
    let mut has_on_stop = false;
    for (export, signature) in abi::OPTIONAL_EXPORTS {
        let present = check_function(name, module, export, signature, false)?;
        has_on_stop |= present && export == abi::EXPORT_ON_STOP;
    }
    Ok(has_on_stop)
}

fn check_function(
    name: &str,
    module: &Module,
    export: &'static str,
    signature: Signature,
    required: bool,
) -> Result<bool, WasmError> {
    match module.get_export(export) {
        Some(ExternType::Func(func)) if matches(&func, signature) => Ok(true),
        Some(other) => Err(WasmError::WrongExport {
            module: name.to_owned(),
            export,
            expected: describe(signature),
            found: extern_kind(&other),
        }),
        None if required => Err(WasmError::MissingExport {
            module: name.to_owned(),
            export,
            expected: describe(signature),
        }),
        None => Ok(false),
    }
}
