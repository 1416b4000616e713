//! stub
use crate::*;
use serde_json::Value;
pub struct Collatz;
impl App for Collatz {
    fn name(&self) -> &'static str { "collatz" }
    fn plan(&self, _: &Value) -> Result<Box<dyn Plan>, AppError> { unimplemented!() }
    fn compute(&self, _: &Value, _: &Value, _: &ComputeCtx) -> Result<Value, ComputeError> { unimplemented!() }
    fn check_output(&self, _: &Value, _: &Value, _: &Value) -> Result<(), AppError> { unimplemented!() }
    fn assembler(&self, _: &Value) -> Result<Box<dyn Assembler>, AppError> { unimplemented!() }
}
