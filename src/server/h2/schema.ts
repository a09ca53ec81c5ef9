// The listener's HTTP/2 settings (src/server/h2): offered by ALPN on TLS listeners, cleartext only on
// request, and the per-connection bounds that HTTP/2's own attacks (Rapid Reset, CONTINUATION and
// HPACK floods, control-frame floods, flow-control hostages) run into.
import { Type } from '@sinclair/typebox';
import { Obj } from '../../core/schema-util.ts';

export const ListenerHttp2Schema = Obj(
  {
    enabled: Type.Boolean({
      default: true,
      description:
        'Offer HTTP/2 by ALPN on a TLS listener (clients that do not ask for it get HTTP/1.1). ' +
        '`false`: HTTP/1.1 only. Every request crosses the same phases whatever the protocol.',
    }),
    cleartext: Type.Boolean({
      default: false,
      description:
        'Also accept cleartext HTTP/2 with prior knowledge (h2c: the connection starts with the HTTP/2 preface) ' +
        'on a listener without TLS. Off by default: browsers never speak it, tools and attack scripts do.',
    }),
    maxConcurrentStreams: Type.Integer({
      minimum: 1,
      maximum: 1000,
      default: 100,
      description:
        'Streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS; nginx also says 100). ' +
        'A stream opened past it is refused (RST_STREAM REFUSED_STREAM) before it is a request.',
    }),
    maxResetsPerSecond: Type.Integer({
      minimum: 1,
      default: 100,
      description:
        'Streams a client may reset (RST_STREAM) on one connection within a second (Rapid Reset, CVE-2023-44487: ' +
        'each reset stream is a request started and thrown away). Past it the connection is closed with GOAWAY ' +
        'ENHANCE_YOUR_CALM and the client charged an offence (`h2_rapid_reset`, see `bans`).',
    }),
    maxControlFramesPerSecond: Type.Integer({
      minimum: 10,
      default: 1000,
      description:
        'SETTINGS and PING frames one connection may send within a second: each costs work and an answer, and ' +
        'none carries a request. Past it the connection is closed (GOAWAY ENHANCE_YOUR_CALM) and the client ' +
        'charged an offence (`h2_frame_flood`). Frames JavaScript does not see (WINDOW_UPDATE, PRIORITY) are ' +
        'bounded by bytes instead: more than 1 MiB plus 8 bytes per byte of requests closes the connection the same way.',
    }),
  },
  { default: {}, description: 'HTTP/2 on this listener (src/server/h2).' },
);
