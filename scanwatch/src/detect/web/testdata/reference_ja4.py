# JA4 of each ClientHello in a pcap, from tshark's dissection, following FoxIO's ja4.py (to_ja4)
import subprocess, hashlib, sys
G={0x0a0a+0x1010*i for i in range(16)}
F=['tls.handshake.ciphersuite','tls.handshake.extension.type','tls.handshake.extensions_server_name','tls.handshake.extensions.supported_version','tls.handshake.extensions_alpn_str','tls.handshake.sig_hash_alg','tls.handshake.version']
cmd=['tshark','-r',sys.argv[1],'-Y','tls.handshake.type==1','-T','fields','-E','separator=|','-E','aggregator=,']+sum([['-e',f] for f in F],[])
TLS={0x0304:'13',0x0303:'12',0x0302:'11',0x0301:'10',0x0300:'s3'}
for line in subprocess.run(cmd,capture_output=True,text=True).stdout.splitlines():
    c,e,sni,sv,alpn,sig,ver=line.split('|')
    num=lambda s:[int(x,0) for x in s.split(',') if x]
    c=[x for x in num(c) if x not in G]; e=[x for x in num(e) if x not in G]
    svs=[x for x in num(sv) if x not in G]
    v=TLS.get(max(svs) if svs else int(ver,0),'00')
    a=alpn.split(',')[0] if alpn else '00'
    a=a[0]+a[-1]
    h=lambda s:hashlib.sha256(s.encode()).hexdigest()[:12]
    cs=','.join(sorted('%04x'%x for x in c))
    es=','.join(sorted('%04x'%x for x in e if x not in (0,0x10)))
    sg=','.join('%04x'%x for x in num(sig))
    if sg: es+='_'+sg
    print(f"t{v}{'d' if sni else 'i'}{min(len(c),99):02d}{min(len(e),99):02d}{a}_{h(cs)}_{h(es)}", 'raw:',cs,'|',es)
