//! A TCP proxy between a test and a server, that the test can cut: [`Proxy::down`] closes
//! every connection through it and refuses new ones, as a server that went away;
//! [`Proxy::up`] listens again on the same address.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

enum Command {
    /// Stop listening, close every connection; answers how many were open.
    Down(oneshot::Sender<usize>),
    /// Listen again.
    Up(oneshot::Sender<io::Result<()>>),
}

/// A proxy from `127.0.0.1:<port>` to one server. Dropping it closes everything.
pub struct Proxy {
    addr: SocketAddr,
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards each connection to `target`
    /// (`host:port`), on the current tokio runtime.
    pub async fn start(target: impl Into<String>) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (commands, receiver) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(listener, target.into(), receiver));
        Ok(Self { addr, commands, task })
    }

    /// The address to connect to instead of the server's.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts the server off: once this returns, the port refuses connections and every
    /// connection made through the proxy is closed. Returns how many were open.
    pub async fn down(&self) -> usize {
        let (done, closed) = oneshot::channel();
        self.commands.send(Command::Down(done)).expect("the proxy task is running");
        closed.await.expect("the proxy task answers")
    }

    /// Brings the server back: once this returns, the port accepts connections again.
    pub async fn up(&self) {
        let (done, listening) = oneshot::channel();
        self.commands.send(Command::Up(done)).expect("the proxy task is running");
        let bound = listening.await.expect("the proxy task answers");
        bound.unwrap_or_else(|e| panic!("the proxy cannot listen on {} again: {e}", self.addr));
    }
}

impl Drop for Proxy {
    /// Stops the proxy; its connections, owned by its task, close with it.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The proxy's task: accepts while up, one task per connection, and obeys the commands.
async fn run(listener: TcpListener, target: String, mut commands: mpsc::UnboundedReceiver<Command>) {
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(_) => return,
    };
    let mut listener = Some(listener);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::Down(done)) => {
                    listener = None;
                    let open = connections.len();
                    // Aborted, each task drops its two sockets: both peers see the
                    // connection close.
                    connections.shutdown().await;
                    let _ = done.send(open);
                }
                Some(Command::Up(done)) => {
                    if listener.is_none() {
                        // Tokio sets SO_REUSEADDR: the port can be bound again at once,
                        // whatever state its closed connections are in.
                        match TcpListener::bind(addr).await {
                            Ok(l) => listener = Some(l),
                            Err(e) => {
                                let _ = done.send(Err(e));
                                continue;
                            }
                        }
                    }
                    let _ = done.send(Ok(()));
                }
            },
            accepted = accept(listener.as_ref()) => {
                if let Ok((client, _)) = accepted {
                    connections.spawn(forward(client, target.clone()));
                }
            }
            // Reaps connections that ended on their own.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// The next connection, or never while the proxy is down.
async fn accept(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Copies bytes both ways between `client` and a new connection to `target` until either
/// side closes. A server that cannot be reached closes the client's connection.
async fn forward(mut client: TcpStream, target: String) {
    let Ok(mut server) = TcpStream::connect(&target).await else { return };
    // Small requests and replies, each awaited: no delay for coalescing them.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}
