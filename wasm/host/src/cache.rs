//! The on-disk cache of compiled modules: compile once, then map the compiled code back
//! from disk on every later load (and every restart of the node) instead of recompiling.
//!
//! A cache entry is named by the SHA-256 of the module's bytes and of the engine's
//! compatibility hash (wasmtime version, target, and every setting that changes the
//! code), so a different engine never loads another's code. Entries are written to a
//! temporary file and renamed, so a crash never leaves half an entry under a real name.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

use crate::error::WasmError;

/// The cache directory of one engine.
#[derive(Debug)]
pub(crate) struct ModuleCache {
    dir: PathBuf,
    engine_hash: [u8; 32],
}

/// Feeds `Hash` output into SHA-256.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Where a load came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// The compiled code was mapped from the cache.
    Hit,
    /// The module was compiled (and stored, if there is a cache).
    Compiled,
}

impl ModuleCache {
    pub(crate) fn open(dir: PathBuf, engine: &Engine) -> Result<ModuleCache, WasmError> {
        std::fs::create_dir_all(&dir).map_err(|source| WasmError::Read {
            path: dir.clone(),
            source,
        })?;
        let mut hasher = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(ModuleCache {
            dir,
            engine_hash: hasher.0.finalize().into(),
        })
    }

    fn entry_path(&self, wasm: &[u8]) -> PathBuf {
        let mut sha = Sha256::new();
        sha.update(self.engine_hash);
        sha.update(wasm);
        let digest = sha.finalize();
        let name: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        self.dir.join(format!("{name}.cwasm"))
    }

    /// Loads the compiled module for `wasm`, compiling and storing it on a miss. A
    /// corrupt or incompatible entry is replaced.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
        compile: impl FnOnce() -> Result<Module, WasmError>,
    ) -> Result<(Module, CacheOutcome), WasmError> {
        let path = self.entry_path(wasm);
        if path.exists() {
            // SAFETY: `deserialize_file` maps code that will be executed, so the file must
            // have been written by `Engine::precompile_module`/`Module::serialize` of a
            // compatible engine. Entries in this directory are only ever written by
            // `store` below from such output, under a name that includes this engine's
            // compatibility hash, and wasmtime still checks the header (version, target,
            // settings) and refuses a mismatch. Anyone able to write this directory can
            // already run code as this user.
            match unsafe { Module::deserialize_file(engine, &path) } {
                Ok(module) => return Ok((module, CacheOutcome::Hit)),
                Err(error) => {
                    tracing::warn!(path = %path.display(), "discarding cached module: {error:#}");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let module = compile()?;
        if let Err(error) = self.store(&path, &module) {
            tracing::warn!(path = %path.display(), "cannot cache compiled module: {error}");
        }
        Ok((module, CacheOutcome::Compiled))
    }

    fn store(&self, path: &Path, module: &Module) -> std::io::Result<()> {
        let bytes = module
            .serialize()
            .map_err(|error| std::io::Error::other(format!("{error:#}")))?;
        let temporary = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&temporary, bytes)?;
        std::fs::rename(&temporary, path)
    }
}
