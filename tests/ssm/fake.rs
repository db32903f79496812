//! An in-memory Parameter Store with just the primitives the lock uses, and
//! an executor that interleaves several callers one SSM call at a time in an
//! order the test chooses.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use async_trait::async_trait;
use jiff::Timestamp;
use keyplan::provider::Result;
use keyplan::provider::ssm::{ParameterApi, RawParameter};

/// Pending once, so every call is a point where another caller may run.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// Each call is atomic, as SSM's are; between calls, anyone may run.
#[derive(Default)]
pub struct FakeSsm {
    params: Mutex<BTreeMap<String, RawParameter>>,
    pub calls: Mutex<Vec<String>>,
}

impl FakeSsm {
    fn log(&self, op: &str, name: &str) {
        self.calls.lock().unwrap().push(format!("{op} {name}"));
    }

    pub fn value(&self, name: &str) -> Option<String> {
        self.params
            .lock()
            .unwrap()
            .get(name)
            .map(|p| p.value.clone())
    }

    pub fn names(&self) -> Vec<String> {
        self.params.lock().unwrap().keys().cloned().collect()
    }
}

#[async_trait]
impl ParameterApi for FakeSsm {
    async fn get(&self, name: &str) -> Result<Option<RawParameter>> {
        YieldOnce(false).await;
        self.log("get", name);
        Ok(self.params.lock().unwrap().get(name).cloned())
    }

    async fn create(&self, name: &str, value: &str) -> Result<Option<u64>> {
        YieldOnce(false).await;
        self.log("create", name);
        let mut params = self.params.lock().unwrap();
        if params.contains_key(name) {
            return Ok(None);
        }
        params.insert(
            name.to_owned(),
            RawParameter {
                name: name.to_owned(),
                value: value.to_owned(),
                version: 1,
                modified: Some(Timestamp::now()),
            },
        );
        Ok(Some(1))
    }

    async fn overwrite(&self, name: &str, value: &str) -> Result<u64> {
        YieldOnce(false).await;
        self.log("overwrite", name);
        let mut params = self.params.lock().unwrap();
        let p = params
            .entry(name.to_owned())
            .or_insert_with(|| RawParameter {
                name: name.to_owned(),
                value: String::new(),
                version: 0,
                modified: None,
            });
        p.value = value.to_owned();
        p.version += 1;
        p.modified = Some(Timestamp::now());
        Ok(p.version)
    }

    async fn delete(&self, name: &str) -> Result<()> {
        YieldOnce(false).await;
        self.log("delete", name);
        self.params.lock().unwrap().remove(name);
        Ok(())
    }

    async fn list(&self, path: &str) -> Result<Vec<RawParameter>> {
        YieldOnce(false).await;
        self.log("list", path);
        let prefix = format!("{}/", path.trim_end_matches('/'));
        Ok(self
            .params
            .lock()
            .unwrap()
            .values()
            .filter(|p| {
                p.name
                    .strip_prefix(&prefix)
                    .is_some_and(|rest| !rest.contains('/'))
            })
            .cloned()
            .collect())
    }
}

pub type Task<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Runs tasks by hand: `step(i)` lets task `i` make exactly one SSM call.
pub struct Stepper<'a, T> {
    tasks: Vec<Option<Task<'a, T>>>,
    pub outputs: Vec<Option<T>>,
}

impl<'a, T> Stepper<'a, T> {
    pub fn new(tasks: Vec<Task<'a, T>>) -> Self {
        let outputs = tasks.iter().map(|_| None).collect();
        Self {
            tasks: tasks.into_iter().map(Some).collect(),
            outputs,
        }
    }

    /// Polls task `i` once; true when it has finished.
    pub fn step(&mut self, i: usize) -> bool {
        let Some(task) = self.tasks[i].as_mut() else {
            return true;
        };
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(output) = task.as_mut().poll(&mut cx) {
            self.outputs[i] = Some(output);
            self.tasks[i] = None;
            return true;
        }
        false
    }

    pub fn finish(&mut self, i: usize) {
        while !self.step(i) {}
    }

    /// Runs every task to the end, choosing who goes next with `seed`.
    pub fn run_shuffled(&mut self, mut seed: u64) {
        loop {
            let pending: Vec<usize> = (0..self.tasks.len())
                .filter(|&i| self.tasks[i].is_some())
                .collect();
            if pending.is_empty() {
                return;
            }
            // xorshift64*: deterministic, so a failure replays with its seed.
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            let pick = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) as usize % pending.len();
            self.step(pending[pick]);
        }
    }
}
