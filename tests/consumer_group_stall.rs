//! A consumer group that stalls must not be silent (issue 16), with real processes: Apache Kafka, the ClickHouse
//! server 18.16, two `rum consume` members with the default session timeout and lease (10 s, 5 s), and a real
//! Prometheus (Debian's 2.42) scraping the members every second with the repository's rule files. Beacons flow all
//! along (50 every 200 ms, a poison message every 500th).
//!
//! 1. One member SIGKILLed and started again on the same metrics port, three times at random-ish moments (the
//!    third while it was still joining): the group owns all 4 partitions again within the session timeout and a
//!    few seconds (within two session timeouts after the third kill: the member killed while joining was given
//!    partitions in the next generation and held them until its session expired), Prometheus sees partitions
//!    owned by nobody (`RumConsumerPartitionsUnowned` pending) and the lag rise, and the rule does not fire (its
//!    30 s are above that). Every beacon produced until then is stored, none twice.
//! 2. Every member SIGKILLed for 70 s: their series go stale at the first failed scrape, the absent() half of
//!    `RumConsumerPartitionsUnowned` is pending at once and fires within a minute. Started again, the members show
//!    the backlog in `rum_consumer_lag_messages`, drain it to 0, the rule resolves, and the counts are exact
//!    (rows and distinct metric ids in `vitals_raw`, samples in `vitals_1m`).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::stack::{Stack, METRICS_PER_BEACON};
use common::{eventually, metric_sum, stored_counts, wait_for_failed_step, RumProcess};
use rand::Rng;
use rum_testkit::{alert_rule_files, free_port, Prometheus, PrometheusOptions};
use serde_json::Value;

const RULE: &str = "RumConsumerPartitionsUnowned";
const JOB: &str = "rum-consume";
/// The topic's partitions (`Kafka::create_pipeline_topics`).
const PARTITIONS: f64 = 4.0;
/// The consumer's defaults, as in production.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
const LEASE: Duration = Duration::from_secs(5);
/// The steady load: this many beacons every [`LOAD_EVERY`].
const LOAD_BEACONS: u64 = 50;
const LOAD_EVERY: Duration = Duration::from_millis(200);
/// How long every member stays dead.
const ALL_DEAD_FOR: Duration = Duration::from_secs(70);
/// The whole group's lag, as the lag rule reads it.
const GROUP_LAG: &str = "sum(max by (partition) (rum_consumer_lag_messages))";
const UNOWNED: &str = "max(rum_consumer_topic_partitions) - sum(rum_consumer_partitions_owned)";

/// Beacons produced in the background, every [`LOAD_EVERY`], until stopped.
struct Load {
    produced: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(stack: Arc<Stack>) -> Load {
        let produced = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (produced, stop) = (produced.clone(), stop.clone());
            async move {
                let producer = stack.producer();
                let mut every = tokio::time::interval(LOAD_EVERY);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::SeqCst) {
                    every.tick().await;
                    let from = produced.load(Ordering::SeqCst);
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis() as u64;
                    stack
                        .produce_on(&producer, from..from + LOAD_BEACONS, |_| now)
                        .await;
                    // Counted once Kafka acknowledged them all.
                    produced.store(from + LOAD_BEACONS, Ordering::SeqCst);
                }
            }
        });
        Load {
            produced,
            stop,
            task,
        }
    }

    fn produced(&self) -> u64 {
        self.produced.load(Ordering::SeqCst)
    }

    /// Stops producing; the beacons produced in all.
    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.task
            .await
            .expect("the load task produced without error");
        self.produced.load(Ordering::SeqCst)
    }
}

/// A member slot: its metrics port (kept across restarts, so Prometheus keeps its target) and the process.
struct Member {
    port: u16,
    process: Option<RumProcess>,
}

impl Member {
    fn start(stack: &Stack, port: u16) -> Member {
        let mut member = Member {
            port,
            process: None,
        };
        member.restart(stack);
        member
    }

    fn restart(&mut self, stack: &Stack) {
        let session = SESSION_TIMEOUT.as_millis().to_string();
        let lease = LEASE.as_millis().to_string();
        self.process = Some(stack.consumer_with(
            self.port,
            &[
                ("RUM_CONSUMER_SESSION_TIMEOUT_MS", session.as_str()),
                ("RUM_CONSUMER_FENCE_LEASE_MS", lease.as_str()),
            ],
        ));
    }

    fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// `(rum_consumer_partitions_owned, rum_consumer_topic_partitions)` of the member on `port`; None while it does
/// not answer.
async fn owned(http: &reqwest::Client, port: u16) -> Option<(f64, f64)> {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let text = http.get(&url).send().await.ok()?.text().await.ok()?;
    Some((
        metric_sum(&text, "rum_consumer_partitions_owned"),
        metric_sum(&text, "rum_consumer_topic_partitions"),
    ))
}

/// Waits until every member owns some partitions and together all of them; how long it took.
async fn wait_all_owned(http: &reqwest::Client, members: &[Member], within: Duration) -> Duration {
    let started = Instant::now();
    eventually(
        "every member to own partitions, all 4 together",
        within,
        async || {
            let mut sum = 0.0;
            for member in members {
                let (owned, topic) = owned(http, member.port).await?;
                if owned < 1.0 || topic != PARTITIONS {
                    return None;
                }
                sum += owned;
            }
            (sum == PARTITIONS).then_some(())
        },
    )
    .await;
    started.elapsed()
}

/// The value of an instant query's only sample; None when the result is empty (or the query fails).
fn scalar(prometheus: &Prometheus, promql: &str) -> Option<f64> {
    let body = prometheus.query_json(promql).ok()?;
    let json: Value = serde_json::from_str(&body).ok()?;
    let result = json["data"]["result"].as_array()?;
    assert!(result.len() <= 1, "{promql}: one sample expected: {body}");
    result.first()?["value"][1].as_str()?.parse().ok()
}

/// The states of [`RULE`]'s alerts (`GET /api/v1/alerts`): (job label, state) each.
fn rule_alerts(prometheus: &Prometheus) -> Vec<(String, String)> {
    let body = match prometheus.get("/api/v1/alerts") {
        Ok((200, body)) => body,
        other => panic!("GET /api/v1/alerts: {other:?}"),
    };
    let json: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    json["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["labels"]["alertname"] == RULE)
        .map(|a| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (text(&a["labels"]["job"]), text(&a["state"]))
        })
        .collect()
}

/// `[Ns:1s]` covering the time since `since` (at least 2 s).
fn range_since(since: Instant) -> String {
    format!("{}s", since.elapsed().as_secs().max(2) + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_group_shows_in_the_metrics_fires_its_rule_and_recovers_exactly() {
    let test_started = Instant::now();
    let stack = Arc::new(Stack::start());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("http client");
    // One port per member slot, for the whole test: a member started again keeps its scrape target.
    let mut members = vec![
        Member::start(&stack, free_port()),
        Member::start(&stack, free_port()),
    ];
    let prometheus = Prometheus::start(&PrometheusOptions {
        scrape_jobs: vec![(JOB.into(), members.iter().map(Member::target).collect())],
        rule_files: alert_rule_files(),
        ..PrometheusOptions::default()
    });
    let load = Load::start(stack.clone());
    let settled = wait_all_owned(&http, &members, Duration::from_secs(90)).await;
    eprintln!(
        "stall: 2 members own the 4 partitions {settled:?} after their start (stack up at {:?})",
        test_started.elapsed()
    );
    eventually(
        "Prometheus to see the 4 partitions owned and the group's lag",
        Duration::from_secs(30),
        async || {
            let all = scalar(&prometheus, UNOWNED)? == 0.0;
            (all && scalar(&prometheus, GROUP_LAG).is_some()).then_some(())
        },
    )
    .await;
    // The group's lag at steady state, to compare the stalls with.
    let steady_from = Instant::now();
    // Two lag refreshes of each member (every 5 s); the committed offsets behind it move with each proof of
    // ownership (a lease, 5 s), so the steady lag is a few seconds of load.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let steady_lag = scalar(
        &prometheus,
        &format!(
            "max_over_time(({GROUP_LAG})[{}:1s])",
            range_since(steady_from)
        ),
    )
    .expect("the steady lag");
    eprintln!("stall: group lag at steady state at most {steady_lag}");

    // 1. One member SIGKILLed and started again on its port, three times. The second and the third kill are
    // 1-2 s apart: the third hits a member still joining the group (the state a tansu broker kept one in).
    let phase_a = Instant::now();
    let mut rng = rand::rng();
    let mut recoveries = Vec::new();
    for round in 1..=3 {
        let pause = if round == 3 {
            Duration::from_millis(rng.random_range(1_000..2_000))
        } else {
            Duration::from_millis(rng.random_range(2_000..5_000))
        };
        // A deliberate moment of the member's life, not a synchronization.
        tokio::time::sleep(pause).await;
        let victim = &mut members[1];
        let (owned_then, _) = owned(&http, victim.port).await.unwrap_or_default();
        victim.kill();
        let killed = Instant::now();
        victim.restart(&stack);
        eprintln!(
            "stall: round {round}: member on port {} SIGKILLed {pause:?} after the last step (owning {owned_then}) \
             and started again",
            victim.port
        );
        if round == 2 {
            continue;
        }
        // The dead member's partitions move when its session expires. One killed while joining (round 3) was a
        // member of the next generation and given partitions there: they move when its session expires again,
        // counted from that generation's start.
        let sessions = if round == 3 { 2 } else { 1 };
        wait_all_owned(&http, &members, SESSION_TIMEOUT * 3).await;
        let took = killed.elapsed();
        eprintln!("stall: round {round}: all 4 partitions owned again {took:?} after the kill");
        assert!(
            took <= SESSION_TIMEOUT * sessions + Duration::from_secs(5),
            "the group recovers within {sessions} session timeout(s) and a rebalance: {took:?}"
        );
        recoveries.push(took);
    }
    let range = range_since(phase_a);
    let unowned_max = scalar(
        &prometheus,
        &format!("max_over_time(({UNOWNED})[{range}:1s])"),
    );
    let lag_max = scalar(
        &prometheus,
        &format!("max_over_time(({GROUP_LAG})[{range}:1s])"),
    );
    let pending = scalar(
        &prometheus,
        &format!("max_over_time(ALERTS{{alertname=\"{RULE}\",alertstate=\"pending\"}}[{range}])"),
    );
    let firing = scalar(
        &prometheus,
        &format!("max_over_time(ALERTS{{alertname=\"{RULE}\",alertstate=\"firing\"}}[{range}])"),
    );
    eprintln!(
        "stall: during the restarts (Prometheus, {range}): partitions unowned at most {unowned_max:?}, group lag \
         at most {lag_max:?} (steady {steady_lag}), {RULE} pending {pending:?}, firing {firing:?}"
    );
    assert!(
        unowned_max.is_some_and(|v| v >= 2.0),
        "the killed member's partitions showed unowned: {unowned_max:?}"
    );
    assert_eq!(pending, Some(1.0), "{RULE} pending during the restarts");
    assert_eq!(firing, None, "{RULE} must not fire for a member restarted");
    // Half the partitions stood still for a session timeout and the new owner's lease at least (over 10 s of
    // half the load, 1,250 messages).
    assert!(
        lag_max.is_some_and(|v| v > steady_lag + 1_000.0),
        "the lag rose while a member's partitions were owned by nobody: {lag_max:?}, steady {steady_lag}"
    );
    // Everything produced until now is stored, nothing twice (the rollup is checked at the end).
    let produced_a = load.produced();
    let (raw, distinct, _) = eventually(
        "the beacons produced during the restarts to be stored",
        Duration::from_secs(90),
        async || {
            stored_counts(&stack.clickhouse).filter(|c| c.0 >= produced_a * METRICS_PER_BEACON)
        },
    )
    .await;
    assert_eq!(raw, distinct, "no metric stored twice after the restarts");
    eprintln!(
        "stall: {produced_a} beacons produced by the third recovery, all stored ({raw} rows, {distinct} ids), \
         at {:?}",
        test_started.elapsed()
    );

    // 2. Every member SIGKILLed for a minute, beacons still flowing.
    let produced_before = load.produced();
    for member in &mut members {
        member.kill();
    }
    let killed = Instant::now();
    let mut pending_after = None;
    let firing_after = eventually(
        &format!("{RULE} to fire with every member dead"),
        Duration::from_secs(60),
        async || {
            let alerts = rule_alerts(&prometheus);
            let absent = |state: &str| alerts.iter().any(|(job, s)| job.is_empty() && s == state);
            if pending_after.is_none() && (absent("pending") || absent("firing")) {
                pending_after = Some(killed.elapsed());
            }
            absent("firing").then(|| killed.elapsed())
        },
    )
    .await;
    eprintln!(
        "stall: every member dead: {RULE} (absent) pending after {pending_after:?}, firing after {firing_after:?}"
    );
    assert!(
        pending_after.is_some_and(|t| t < Duration::from_secs(10)),
        "the dead members' series go stale at the first failed scrape, not after the 5-minute lookback: pending \
         after {pending_after:?}"
    );
    assert_eq!(
        scalar(&prometheus, &format!("sum(up{{job=\"{JOB}\"}})")),
        Some(0.0)
    );
    assert_eq!(
        scalar(&prometheus, GROUP_LAG),
        None,
        "no member, no lag series: the stall shows as the absent() alert"
    );
    // The deliberate outage.
    tokio::time::sleep(ALL_DEAD_FOR.saturating_sub(killed.elapsed())).await;
    let produced_dead = load.produced() - produced_before;
    for member in &mut members {
        member.restart(&stack);
    }
    let restarted = Instant::now();
    eprintln!(
        "stall: members started again after {:?}, {produced_dead} beacons produced meanwhile",
        killed.elapsed()
    );

    // The backlog shows in the lag (the members read it at their start), and drains while beacons still flow.
    let (mut backlog, mut owned_after, mut resolved_after) = (None, None, None);
    eventually(
        "the backlog in the group's lag, every member owning partitions, and the rule resolved",
        Duration::from_secs(60),
        async || {
            if backlog.is_none() {
                backlog = scalar(&prometheus, GROUP_LAG)
                    .filter(|&lag| lag >= produced_dead as f64 / 2.0)
                    .map(|lag| (lag, restarted.elapsed()));
            }
            if owned_after.is_none() {
                let mut sum = 0.0;
                for member in &members {
                    match owned(&http, member.port).await {
                        Some((n, topic)) if n >= 1.0 && topic == PARTITIONS => sum += n,
                        _ => sum = f64::NAN,
                    }
                }
                owned_after = (sum == PARTITIONS).then(|| restarted.elapsed());
            }
            if resolved_after.is_none()
                && owned_after.is_some()
                && rule_alerts(&prometheus).is_empty()
            {
                resolved_after = Some(restarted.elapsed());
            }
            (backlog.is_some() && resolved_after.is_some()).then_some(())
        },
    )
    .await;
    eprintln!(
        "stall: after the restart: lag (value, when) {backlog:?}, all 4 partitions owned {owned_after:?} after it, \
         {RULE} inactive {resolved_after:?} after it"
    );
    let caught_up = eventually(
        "the backlog to drain under the steady load",
        Duration::from_secs(90),
        async || {
            let lag = scalar(&prometheus, GROUP_LAG)?;
            (lag <= steady_lag.max(250.0)).then(|| restarted.elapsed())
        },
    )
    .await;
    eprintln!("stall: backlog drained {caught_up:?} after the restart");
    let produced = load.stop().await;
    eventually(
        "the group's lag to drain to 0",
        Duration::from_secs(60),
        async || (scalar(&prometheus, GROUP_LAG)? == 0.0).then_some(()),
    )
    .await;
    stack
        .assert_exactly(produced * METRICS_PER_BEACON, Duration::from_secs(60))
        .await;
    eventually(
        &format!("{RULE} to stay inactive"),
        Duration::from_secs(10),
        async || rule_alerts(&prometheus).is_empty().then_some(()),
    )
    .await;
    let firing_since_restart = scalar(
        &prometheus,
        &format!(
            "max_over_time(ALERTS{{alertname=\"{RULE}\",alertstate=\"firing\",job=\"{JOB}\"}}[{}])",
            range_since(restarted)
        ),
    );
    assert_eq!(
        firing_since_restart, None,
        "the members started again settle before the rule's `for`"
    );
    eprintln!(
        "stall: {produced} beacons produced, {} rows exact; {RULE} inactive; recoveries {recoveries:?}; wall \
         time {:?}",
        produced * METRICS_PER_BEACON,
        test_started.elapsed()
    );
}

/// What the stall test's SIGKILL of every member once hit: a member killed after its INSERT into `vitals_raw` and
/// before the rollup's, its partitions resumed by a member that cuts its batches otherwise (here smaller). The new
/// owner's first batch of a partition covers only part of what `vitals_raw` holds above the ledger; the rest comes
/// in its next batches, which must not be inserted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_killed_between_its_two_inserts_is_resumed_in_smaller_batches_without_doubling() {
    let stack = Stack::start();
    const N: u64 = 600;
    let port = free_port();
    let mut first = stack.consumer(port);
    stack.produce(0..N / 2).await;
    stack
        .assert_exactly(N / 2 * METRICS_PER_BEACON, Duration::from_secs(60))
        .await;
    // The rollup's INSERT fails after vitals_raw took the batch (up to 100 messages), at every retry.
    stack.break_rollup();
    stack.produce(N / 2..N).await;
    wait_for_failed_step(port, "rollup_insert", Duration::from_secs(60)).await;
    first.kill();
    let raw: u64 = stack
        .clickhouse
        .query("SELECT count() FROM rum.vitals_raw FORMAT TSV")
        .trim()
        .parse()
        .expect("a count");
    let raw_alone = raw - N / 2 * METRICS_PER_BEACON;
    assert!(
        raw_alone > 5 * METRICS_PER_BEACON,
        "vitals_raw took a batch alone: {raw_alone} rows"
    );
    stack.restore_rollup();
    let _second = stack.consumer_with(free_port(), &[("RUM_CONSUMER_BATCH_MAX_MESSAGES", "5")]);
    stack
        .assert_exactly(N * METRICS_PER_BEACON, Duration::from_secs(60))
        .await;
}
