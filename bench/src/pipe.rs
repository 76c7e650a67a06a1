//! `lienthong-bench pipe` (hidden): the raw pipe of the benchmark, the least a router written on
//! lapin must do. It consumes one queue with a prefetch and manual acks, republishes each
//! delivery unchanged (body and properties) to another queue on a confirm channel, and acks the
//! delivery once the broker confirmed the copy. Pipelined: the next delivery is taken without
//! waiting for the previous confirm, so up to `prefetch` messages are in flight. It runs as a
//! child process of `lienthong-bench` so that its CPU and memory are measured on their own.

use std::process::ExitCode;

use futures_lite::StreamExt;
use lapin::Confirmation;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{FieldTable, ShortString};

/// Options of `lienthong-bench pipe`.
#[derive(clap::Args, Debug, Clone)]
pub struct PipeArgs {
    /// Queue to consume.
    #[arg(long)]
    pub from: String,
    /// Queue to republish to (through the default exchange).
    #[arg(long)]
    pub to: String,
    /// Prefetch (unacked deliveries).
    #[arg(long, default_value_t = 64)]
    pub prefetch: u16,
    /// AMQP URL of the broker.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: String,
}

/// Run the pipe until SIGTERM or Ctrl-C.
pub async fn run(args: PipeArgs) -> anyhow::Result<ExitCode> {
    let conn = lienthong_core::amqp::connect(&args.amqp_url, "bench-pipe").await?;
    let input = conn.create_channel().await?;
    input
        .basic_qos(args.prefetch, BasicQosOptions::default())
        .await?;
    let output = conn.create_channel().await?;
    output
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut consumer = input
        .basic_consume(
            ShortString::from(args.from.as_str()),
            ShortString::from("lienthong-bench-pipe"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let to = ShortString::from(args.to.as_str());
    loop {
        let d = tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            next = consumer.next() => match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => return Err(e.into()),
                None => anyhow::bail!("the consumer of {} was cancelled", args.from),
            },
        };
        let confirm = output
            .basic_publish(
                ShortString::from(""),
                to.clone(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &d.data,
                d.properties.clone(),
            )
            .await?;
        tokio::spawn(async move {
            let ok = matches!(confirm.await, Ok(Confirmation::Ack(None)));
            let _ = if ok {
                d.ack(BasicAckOptions::default()).await
            } else {
                d.nack(BasicNackOptions {
                    requeue: true,
                    multiple: false,
                })
                .await
            };
        });
    }
    let _ = conn.close(200, "bench-pipe stopping".into()).await;
    Ok(ExitCode::SUCCESS)
}
