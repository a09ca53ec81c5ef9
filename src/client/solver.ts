// The proof-of-work solver, as JavaScript text: the one implementation that both the challenge page's
// Web Worker runs (served as text) and rempart/client runs in Node (compiled once below), so what the
// tests prove in Node is what browsers execute. Plain JS with a midstate is ~4x faster in Node than
// one node:crypto call per nonce (the binding's per-call cost dominates for 100-byte inputs).

/**
 * The solver shared by the page's worker (as text) and by tests: SHA-256 in plain JS, with the
 * midstate of the full 64-byte blocks of `prefix` computed once, so each nonce costs one or two
 * compressions. `solve(prefix, bits, start, count)` returns the first decimal nonce n in
 * [start, start+count) such that SHA-256(prefix + n) has `bits` leading zero bits, or -1.
 * A per-call Web Crypto digest is async and ~20× slower for this (measured in docs/challenge.md).
 */
export const SOLVER_JS = `
var K=new Int32Array([1116352408,1899447441,-1245643825,-373957723,961987163,1508970993,-1841331548,-1424204075,-670586216,310598401,607225278,1426881987,1925078388,-2132889090,-1680079193,-1046744716,-459576895,-272742522,264347078,604807628,770255983,1249150122,1555081692,1996064986,-1740746414,-1473132947,-1341970488,-1084653625,-958395405,-710438585,113926993,338241895,666307205,773529912,1294757372,1396182291,1695183700,1986661051,-2117940946,-1838011259,-1564481375,-1474664885,-1035236496,-949202525,-778901479,-694614492,-200395387,275423344,430227734,506948616,659060556,883997877,958139571,1322822218,1537002063,1747873779,1955562222,2024104815,-2067236844,-1933114872,-1866530822,-1538233109,-1090935817,-965641998]);
var W=new Int32Array(64);
function compress(H,O,buf,off){
  for(var i=0;i<16;i++){var j=off+4*i;W[i]=buf[j]<<24|buf[j+1]<<16|buf[j+2]<<8|buf[j+3];}
  for(i=16;i<64;i++){var x=W[i-15],y=W[i-2];
    W[i]=(((x>>>7)|(x<<25))^((x>>>18)|(x<<14))^(x>>>3))+W[i-7]+(((y>>>17)|(y<<15))^((y>>>19)|(y<<13))^(y>>>10))+W[i-16]|0;}
  var a=H[0],b=H[1],c=H[2],d=H[3],e=H[4],f=H[5],g=H[6],h=H[7];
  for(i=0;i<64;i++){
    var t1=h+(((e>>>6)|(e<<26))^((e>>>11)|(e<<21))^((e>>>25)|(e<<7)))+((e&f)^(~e&g))+K[i]+W[i]|0;
    var t2=(((a>>>2)|(a<<30))^((a>>>13)|(a<<19))^((a>>>22)|(a<<10)))+((a&b)^(a&c)^(b&c))|0;
    h=g;g=f;f=e;e=d+t1|0;d=c;c=b;b=a;a=t1+t2|0;}
  O[0]=H[0]+a|0;O[1]=H[1]+b|0;O[2]=H[2]+c|0;O[3]=H[3]+d|0;O[4]=H[4]+e|0;O[5]=H[5]+f|0;O[6]=H[6]+g|0;O[7]=H[7]+h|0;
}
function solve(prefix,bits,start,count){
  var bytes=new TextEncoder().encode(prefix),full=bytes.length-bytes.length%64;
  var M=new Int32Array([1779033703,-1150833019,1013904242,-1521486534,1359893119,-1694144372,528734635,1541459225]);
  for(var o=0;o<full;o+=64)compress(M,M,bytes,o);
  var tail=bytes.length-full,buf=new Uint8Array(128),S=new Int32Array(8);
  buf.set(bytes.subarray(full));
  for(var n=start;n<start+count;n++){
    var s=String(n),len=tail;
    for(var i=0;i<s.length;i++)buf[len++]=s.charCodeAt(i);
    var bitLen=(full+len)*8;buf[len++]=128;
    var end=len+8<=64?64:128;
    buf.fill(0,len,end);
    buf[end-5]=bitLen/4294967296;buf[end-4]=bitLen>>>24;buf[end-3]=bitLen>>>16;buf[end-2]=bitLen>>>8;buf[end-1]=bitLen;
    compress(M,S,buf,0);
    if(end===128)compress(S,S,buf,64);
    var z=0;
    for(var w=0;w<8;w++){if(S[w]===0){z+=32;continue;}z+=Math.clz32(S[w]);break;}
    if(z>=bits)return n;
  }
  return -1;
}`;

/** `solve(prefix, bits, start, count)`, compiled from SOLVER_JS. */
export const solveRange = new Function(`${SOLVER_JS};return solve;`)() as (
  prefix: string,
  bits: number,
  start: number,
  count: number,
) => number;
