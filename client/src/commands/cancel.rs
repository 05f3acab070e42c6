//! `pib-client cancel JOB`: asks, does not wait; `jobs` shows how it ended.

use serde_json::json;

use crate::bus::Bus;
use crate::calls;
use crate::errors::ClientError;
use crate::job::JobRef;
use crate::output::{self, Ui};

pub async fn run(bus: &mut Bus, ui: &Ui, job: JobRef) -> Result<(), ClientError> {
    let path = job.path();
    let proxy = bus.job(&path).await?;
    bus.call::<_, ()>(proxy.inner(), &calls::CANCEL, &())
        .await?;
    if ui.json {
        output::json_line(&json!({ "job": path, "cancel_requested": true }));
    } else {
        output::plain(&format!("Asked job {job} to stop."));
    }
    Ok(())
}
