//! The demo upstream that `zerohop` starts only when it runs its embedded default config, so
//! that a newcomer can `curl http://127.0.0.1:10000/` through the proxy at once. It answers
//! every HTTP/1.x request head with a short text; it is not on any request path otherwise.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

pub fn spawn(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    log::info!("demo upstream listening on {addr}");
    std::thread::Builder::new()
        .name("demo-upstream".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = std::thread::Builder::new()
                    .name("demo-conn".into())
                    .spawn(move || serve(conn));
            }
        })?;
    Ok(())
}

fn serve(mut conn: TcpStream) -> std::io::Result<()> {
    let peer = conn.peer_addr()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let body = format!(
                "Hello from the zerohop demo upstream.\n\
                 This connection came through zerohop; its peer here is {peer}.\n"
            );
            write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )?;
            buf.drain(..end + 4);
        }
        if buf.len() > 64 * 1024 {
            return Ok(());
        }
    }
}
