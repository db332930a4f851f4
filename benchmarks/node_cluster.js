// The seed's Node server, clustered: BENCH_WORKERS processes, the same 32-byte hello.
const cluster = require('cluster');
const http = require('http');
const workers = parseInt(process.env.BENCH_WORKERS || '1', 10);
const port = parseInt(process.env.BENCH_PORT || '8000', 10);
const workMs = parseFloat(process.env.BENCH_WORK_MS || '0');
const body = 'Hello, World! fastcluster bench\n';

if (cluster.isPrimary && workers > 1) {
  for (let i = 0; i < workers; i++) cluster.fork();
} else {
  http.createServer((req, res) => {
    if (workMs > 0) { const end = Date.now() + workMs; while (Date.now() < end) {} }
    res.writeHead(200, {'Content-Type': 'text/plain', 'Content-Length': body.length});
    res.end(body);
  }).listen(port, '127.0.0.1');
}
