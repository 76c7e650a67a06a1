//! The tests' private RabbitMQ nodes: the test kit's [`PrivateBroker`], started or driven with
//! a panic (the test's failure) instead of an error.

pub use lienthong_testkit::private_broker::PrivateBroker;

/// Starting and driving a private node in a test: any error fails the test.
pub trait PrivateBrokerExt: Sized {
    /// A node with the default configuration.
    fn start(name: &str) -> Self;
    /// A node with extra `rabbitmq.conf` lines.
    fn start_with(name: &str, conf: &str) -> Self;
    /// A node with extra `rabbitmq.conf` lines and files in its directory.
    fn start_with_files(name: &str, conf: &str, files: &[(&str, &str)]) -> Self;
    /// `rabbitmqctl -n <node> <args>`.
    fn ctl(&self, args: &[&str]);
}

impl PrivateBrokerExt for PrivateBroker {
    fn start(name: &str) -> Self {
        Self::start_with(name, "")
    }

    fn start_with(name: &str, conf: &str) -> Self {
        Self::start_with_files(name, conf, &[])
    }

    fn start_with_files(name: &str, conf: &str, files: &[(&str, &str)]) -> Self {
        PrivateBroker::try_start_with_files(name, conf, files)
            .unwrap_or_else(|e| panic!("private broker: {e:#}"))
    }

    fn ctl(&self, args: &[&str]) {
        self.try_ctl(args)
            .unwrap_or_else(|e| panic!("private broker: {e:#}"));
    }
}
