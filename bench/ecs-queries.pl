#!/usr/bin/perl
# Writes DNS queries in dnsperf's -B format (RFC 1035 4.2.2 framing: 2-byte length, then the
# message) so that every query can carry its own EDNS Client Subnet option; dnsperf's -E sets
# one fixed option for the whole run.
#
#   perl ecs-queries.pl [--do] OUT.bin NAME TYPE[,TYPE...] NET/LEN [NET/LEN...]
#
# One query per (network, type), networks in the order given, types interleaved. IPv4 networks
# only. RD is clear, EDNS payload 1232, ECS source prefix LEN, scope 0. --do sets the DNSSEC OK
# bit (RFC 3225) in every query (dnsperf's -D does not touch -B messages).
use strict;
use warnings;

my $do = 0;
if (@ARGV && $ARGV[0] eq '--do') { $do = 1; shift @ARGV }
my ($out, $name, $types, @nets) = @ARGV;
die "usage: $0 OUT NAME TYPES NET/LEN...\n" unless $out && $name && $types && @nets;
my %qtype = (A => 1, NS => 2, MX => 15, TXT => 16, AAAA => 28);

my $qname = join('', map { chr(length $_) . $_ } split /\./, $name) . "\0";
open(my $fh, '>:raw', $out) or die "$out: $!\n";
for my $net (@nets) {
    my ($addr, $len) = split m{/}, $net;
    die "bad network $net\n" unless defined $len && $len >= 0 && $len <= 32;
    my @octets = split /\./, $addr;
    die "bad IPv4 address $addr\n" unless @octets == 4;
    my $nbytes = int(($len + 7) / 8);
    my $ecs_addr = pack('C*', @octets[0 .. $nbytes - 1]);
    # ECS: family 1 (IPv4), source prefix, scope prefix 0, the address cut to the prefix.
    my $ecs = pack('nCC', 1, $len, 0) . $ecs_addr;
    my $opt = "\0" . pack('nnNn', 41, 1232, $do ? 0x8000 : 0, 4 + length $ecs) . pack('nn', 8, length $ecs) . $ecs;
    for my $t (split /,/, $types) {
        my $code = $qtype{$t} // die "unknown type $t\n";
        # ID (dnsperf overwrites it), flags 0 (a plain query, RD clear), 1 question, 1 additional.
        my $msg = pack('nnnnnn', 0, 0, 1, 0, 0, 1) . $qname . pack('nn', $code, 1) . $opt;
        print $fh pack('n', length $msg), $msg;
    }
}
close $fh or die "$out: $!\n";
