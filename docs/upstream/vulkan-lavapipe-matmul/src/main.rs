//! burn 0.22.1's `vulkan` backend (cubecl's SPIR-V compiler) on Mesa's lavapipe: runs one op on
//! flex and then on the first Vulkan device, and prints the sum of the output
//! (summed on the host, so that the op is the only kernel).
//!
//! usage: vulkan-lavapipe-matmul add|gelu|softmax|matmul|sum

use burn::tensor::{Device, DeviceType, Tensor, TensorData, activation};

fn main() {
    let op = std::env::args().nth(1).unwrap_or_else(|| "matmul".into());
    let Some(vulkan) = Device::enumerate(DeviceType::Vulkan).into_vec().into_iter().next() else {
        eprintln!("no Vulkan device (Debian: apt-get install mesa-vulkan-drivers libvulkan1)");
        std::process::exit(2);
    };
    for (name, device) in [("flex", Device::flex()), ("vulkan", vulkan)] {
        let values: Vec<f32> = (0..64 * 64).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
        let a = Tensor::<2>::from_data(TensorData::new(values, [64, 64]), &device);
        println!("{name} {op} ...");
        let out = match op.as_str() {
            "add" => a.clone() + a,
            "gelu" => activation::gelu(a),
            "softmax" => activation::softmax(a, 1),
            "matmul" => a.clone().matmul(a.transpose()),
            "sum" => a.sum().reshape([1, 1]),
            other => panic!("unknown op {other}: add, gelu, softmax, matmul or sum"),
        };
        let sum: f32 = out.into_data().try_to_vec::<f32>().expect("f32 values").iter().sum();
        println!("{name} {op}: {sum}");
    }
}
