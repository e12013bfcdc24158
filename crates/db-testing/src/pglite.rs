//! PGlite: one backend per process, handed to one test at a time and reset
//! in between.

use std::sync::Arc;

use db::{AnyPool, Config, DataDir, PglitePool, Pool, Result};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::reset::{Baseline, mark, reset};
use crate::{Hold, TestDatabase};

#[derive(Debug)]
pub(crate) struct Shared {
    config: Config,
    setup: String,
    backend: Arc<Mutex<Option<Instance>>>,
}

/// A test's turn on the backend: held until its [`TestDatabase`] is dropped.
#[derive(Debug)]
pub(crate) struct Turn {
    _backend: OwnedMutexGuard<Option<Instance>>,
}

/// The open backend and what it looked like right after the setup.
#[derive(Debug)]
pub(crate) struct Instance {
    pool: AnyPool,
    baseline: Baseline,
}

impl Shared {
    pub(crate) fn new(config: Config, setup: String) -> Shared {
        Shared {
            config,
            setup,
            backend: Arc::new(Mutex::new(None)),
        }
    }

    pub(crate) async fn database(&self) -> Result<TestDatabase> {
        let mut turn = Arc::clone(&self.backend).lock_owned().await;
        let reset = match turn.as_ref() {
            Some(instance) => reset(&instance.pool, &instance.baseline).await,
            None => Ok(false),
        };
        if !matches!(reset, Ok(true)) {
            if let Err(e) = &reset {
                tracing::info!(error = %e, "test database reset failed; rebuilding");
            }
            if let Some(old) = turn.take() {
                old.pool.close().await;
            }
            *turn = Some(self.build().await?);
        }
        let pool = match turn.as_ref() {
            Some(instance) => instance.pool.clone(),
            None => return Err(db::Error::Closed),
        };
        Ok(TestDatabase {
            pool,
            config: self.config.clone(),
            _hold: Hold::Pglite {
                _turn: Turn { _backend: turn },
            },
        })
    }

    async fn build(&self) -> Result<Instance> {
        // Only a database made here and gone with the process is ever
        // reset: never a directory that may hold someone's data.
        if self.config.pglite.data_dir != DataDir::Memory {
            return Err(db::Error::backend(
                "db-testing",
                std::io::Error::other(format!(
                    "test databases on the embedded backend are temporary; refusing to use {} \
                     (set COCALC_PGLITE_DATA_DIR=memory:// or leave it unset)",
                    self.config.pglite.data_dir
                )),
            ));
        }
        let pool = PglitePool::open(&self.config).await?;
        mark(&AnyPool::Pglite(pool.clone())).await?;
        if !self.setup.trim().is_empty() {
            pool.batch_execute(&self.setup).await?;
        }
        let any = AnyPool::Pglite(pool.clone());
        let baseline = Baseline::capture(&any).await?;
        Ok(Instance {
            pool: any,
            baseline,
        })
    }
}
