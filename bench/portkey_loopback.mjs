// Preloaded into Portkey's gateway by bench/run.py (`node --import`): its start script calls
// serve({port}) without a host, which listens on every interface; this binds such a listen to the
// loopback address instead, so the benchmark's servers stay on 127.0.0.1.
import net from "node:net";

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (port, host, ...rest) {
  if (typeof port === "number" && (host === undefined || typeof host === "function")) {
    return host === undefined
      ? listen.call(this, port, "127.0.0.1", ...rest)
      : listen.call(this, port, "127.0.0.1", host, ...rest);
  }
  return listen.call(this, port, host, ...rest);
};
