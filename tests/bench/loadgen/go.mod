module musicgateway/bench/loadgen

go 1.21
