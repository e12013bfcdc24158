//! PGlite: embedded backends made as tests ask for them, each held by one
//! test at a time and reset before the next one gets it. A test never waits
//! for another: with none idle, a new backend is made (a test that holds
//! two databases while another does the same must not deadlock), so there
//! are as many as tests held at once.

use std::sync::{Arc, Mutex, PoisonError};

use db::{AnyPool, Config, DataDir, PglitePool, Pool, Result};

use crate::reset::{Baseline, keep_seeds, mark, reset};
use crate::{Hold, Setup, TestDatabase};

#[derive(Debug)]
pub(crate) struct Shared {
    config: Config,
    setup: Setup,
    /// Backends no test holds, each as the last test left it.
    idle: Arc<Mutex<Vec<Instance>>>,
}

/// A test's hold on a backend: gives it back when dropped.
#[derive(Debug)]
pub(crate) struct Turn {
    instance: Option<Instance>,
    idle: Arc<Mutex<Vec<Instance>>>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(instance) = self.instance.take() {
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(instance);
        }
    }
}

/// An open backend and what it looked like right after the setup.
#[derive(Debug)]
pub(crate) struct Instance {
    pool: AnyPool,
    baseline: Baseline,
}

impl Shared {
    pub(crate) fn new(config: Config, setup: Setup) -> Shared {
        Shared {
            config,
            setup,
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub(crate) async fn database(&self) -> Result<TestDatabase> {
        let recycled = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let instance = match recycled {
            Some(instance) => match reset(&instance.pool, &instance.baseline).await {
                Ok(true) => instance,
                outcome => {
                    if let Err(e) = outcome {
                        tracing::info!(error = %e, "test database reset failed; rebuilding");
                    }
                    instance.pool.close().await;
                    self.build().await?
                }
            },
            None => self.build().await?,
        };
        Ok(TestDatabase {
            pool: instance.pool.clone(),
            config: self.config.clone(),
            _hold: Hold::Pglite {
                _turn: Turn {
                    instance: Some(instance),
                    idle: Arc::clone(&self.idle),
                },
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
        let pool = AnyPool::Pglite(PglitePool::open(&self.config).await?);
        mark(&pool).await?;
        self.setup.apply(&pool).await?;
        keep_seeds(&pool).await?;
        let baseline = Baseline::capture(&pool).await?;
        Ok(Instance { pool, baseline })
    }
}
