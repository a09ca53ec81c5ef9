// Symbols the accept layer hangs on sockets for later phases.
/** The client's address as decided at accept time (socket peer, or a trusted PROXY header's source). */
export const kPeerAddress = Symbol('rempart.peerAddress');
/** The JA4 of the connection's TLS ClientHello (src/server/ja4.ts), '' when unknown; set on the TLS socket. */
export const kJa4 = Symbol('rempart.ja4');
/** The connection's HTTP/2 fingerprint (src/server/h2/fingerprint.ts), set by the h2 entry; absent otherwise. */
export const kH2Fingerprint = Symbol('rempart.h2Fingerprint');
/** The prefix key of the connection's peer address, and the address it was made from (`identify`'s cache). */
export const kPeerPrefix = Symbol('rempart.peerPrefix');
export const kPeerPrefixOf = Symbol('rempart.peerPrefixOf');

// Per-connection bookkeeping (src/server/connections.ts): plain numbers on the socket, no table per request.
/** Requests parsed on this connection whose response has not closed yet. */
export const kPending = Symbol('rempart.pending');
/** performance.now() when the connection last became idle between requests (0: busy, or no request yet). */
export const kIdleSince = Symbol('rempart.idleSince');
/** performance.now() when a reply on this connection first waited on the client to read (0: not waiting). */
export const kStallSince = Symbol('rempart.stallSince');
/** Bytes of forwarded replies held for this connection behind an earlier reply (pipelining). */
export const kQueuedBytes = Symbol('rempart.queuedBytes');
/** Reading was stopped because too many requests are unanswered. */
export const kReadPaused = Symbol('rempart.readPaused');
