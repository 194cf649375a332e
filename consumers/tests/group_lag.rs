//! `GroupLag` against a real Apache Kafka (testkit) and a real consumer group of two members: A
//! subscribed to the topic owns all its partitions, B (same group, subscribed to another topic) owns
//! none of them. Both export the lag of every partition of the topic, the same values (committed
//! offset against the high watermark, the low watermark where nothing was committed), the topic's
//! partition count, and their own owned count; B's gauges follow new messages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use rum_consumers::lag::PartitionLag;
use rum_consumers::{ConsumerConfig, ConsumerMetrics, GroupLag};
use rum_schemas::kafka::KafkaConfig;
use rum_testkit::Kafka;

const TOPIC: &str = "rum.beacons.v1";
const OTHER: &str = "rum.lag.other";
const GROUP: &str = "rum-lag-test";

fn produce(broker: &Kafka, partition: i32, count: usize) {
    let producer: ThreadedProducer<DefaultProducerContext> =
        broker.client_config().create().expect("producer");
    for i in 0..count {
        let payload = format!("message {i}");
        producer
            .send(
                BaseRecord::<(), _>::to(TOPIC)
                    .partition(partition)
                    .payload(&payload),
            )
            .map_err(|(e, _)| e)
            .expect("enqueue");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

fn member(broker: &Kafka, topic: &str) -> BaseConsumer {
    let mut config: ClientConfig = broker.client_config();
    let member: BaseConsumer = config
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("member");
    member.subscribe(&[topic]).expect("subscribe");
    member
}

/// Partitions of `topic` assigned to `member`.
fn owned(member: &BaseConsumer, topic: &str) -> usize {
    member
        .assignment()
        .map_or(0, |a| a.elements_for_topic(topic).len())
}

/// Polls both members until the group settled: A owns the topic's 3 partitions, B the other topic's.
fn settle(a: &BaseConsumer, b: &BaseConsumer) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while owned(a, TOPIC) != 3 || owned(b, OTHER) != 1 {
        assert!(
            Instant::now() < deadline,
            "group not settled: A owns {:?}, B owns {:?}",
            a.assignment(),
            b.assignment()
        );
        // Messages are not what this test reads: the commits below set the positions.
        let _ = a.poll(Duration::from_millis(100));
        let _ = b.poll(Duration::from_millis(100));
    }
}

fn commit(a: &BaseConsumer, offsets: &[(i32, i64)]) {
    let mut list = TopicPartitionList::new();
    for &(partition, offset) in offsets {
        list.add_partition_offset(TOPIC, partition, Offset::Offset(offset))
            .expect("offset");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = a.commit(&list, CommitMode::Sync) {
        assert!(Instant::now() < deadline, "commit: {e}");
        let _ = a.poll(Duration::from_millis(100));
    }
}

fn gauge(metrics: &ConsumerMetrics, partition: i32) -> i64 {
    metrics
        .lag
        .with_label_values(&[&partition.to_string()])
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_exports_the_lag_of_every_partition_owned_or_not() {
    let broker = Kafka::start();
    broker.create_topic(TOPIC, 3);
    broker.create_topic(OTHER, 1);
    produce(&broker, 0, 10);
    produce(&broker, 1, 20);
    produce(&broker, 2, 5);
    let a = member(&broker, TOPIC);
    let b = member(&broker, OTHER);
    settle(&a, &b);
    // A consumed partition 0 up to offset 4 and all of partition 1; nothing of partition 2.
    commit(&a, &[(0, 4), (1, 20)]);

    let kafka = KafkaConfig {
        brokers: broker.brokers.clone(),
        topic: TOPIC.into(),
        ..KafkaConfig::default()
    };
    let config = ConsumerConfig {
        group_id: GROUP.into(),
        ..ConsumerConfig::default()
    };
    let new_metrics =
        || Arc::new(ConsumerMetrics::new(10, Duration::from_secs(3_600)).expect("metrics"));
    let (metrics_a, metrics_b) = (new_metrics(), new_metrics());
    let lag_a = GroupLag::new(&kafka, &config, metrics_a.clone()).expect("lag reader");
    let lag_b = GroupLag::new(&kafka, &config, metrics_b.clone()).expect("lag reader");
    lag_a.set_owned(owned(&a, TOPIC));
    lag_b.set_owned(owned(&b, TOPIC));

    let expected = vec![
        PartitionLag {
            partition: 0,
            committed: Some(4),
            low: 0,
            high: 10,
            lag: 6,
        },
        PartitionLag {
            partition: 1,
            committed: Some(20),
            low: 0,
            high: 20,
            lag: 0,
        },
        PartitionLag {
            partition: 2,
            committed: None,
            low: 0,
            high: 5,
            lag: 5,
        },
    ];
    for (name, lag, metrics) in [("A", &lag_a, &metrics_a), ("B", &lag_b, &metrics_b)] {
        let started = Instant::now();
        let read = lag.refresh().await.expect("a refresh");
        eprintln!("group_lag: {name} read {read:?} in {:?}", started.elapsed());
        assert_eq!(read.partitions, 3, "{name}");
        assert_eq!(read.read, expected, "{name}");
        let text = rum_telemetry::encode(&metrics.registry);
        for line in [
            "rum_consumer_lag_messages{partition=\"0\"} 6\n",
            "rum_consumer_lag_messages{partition=\"1\"} 0\n",
            "rum_consumer_lag_messages{partition=\"2\"} 5\n",
            "rum_consumer_topic_partitions 3\n",
        ] {
            assert!(text.contains(line), "{name} exports {line:?}:\n{text}");
        }
        assert_eq!(metrics.lag_refresh_errors.get(), 0, "{name}");
    }
    assert_eq!(metrics_a.partitions_owned.get(), 3);
    assert_eq!(metrics_b.partitions_owned.get(), 0);

    // B, owning nothing, follows the topic from its own task: 7 new messages on partition 1.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(lag_b.clone().run(stopped));
    produce(&broker, 1, 7);
    let deadline = Instant::now() + Duration::from_secs(20);
    while gauge(&metrics_b, 1) != 7 {
        assert!(
            Instant::now() < deadline,
            "B's lag of partition 1: {}",
            gauge(&metrics_b, 1)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((gauge(&metrics_b, 0), gauge(&metrics_b, 2)), (6, 5));
    stop.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the lag task stops")
        .expect("the lag task did not panic");
    // Still members: nothing above took or moved a partition.
    assert_eq!((owned(&a, TOPIC), owned(&b, TOPIC)), (3, 0));
}
