// Symbols the accept layer hangs on sockets for later phases.
/** The client's address as decided at accept time (socket peer, or a trusted PROXY header's source). */
export const kPeerAddress = Symbol('rempart.peerAddress');
